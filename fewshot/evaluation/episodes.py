"""Vectorised few-shot evaluation over an embedding matrix.

Episodes are index arrays into embedding matrices (never copies of vectors), sampled many at once with a
seeded ``numpy.random.Generator``; scoring is batched numpy (BLAS) over chunks of episodes. Shapes:

- ``E`` episodes (or repeats), ``N`` classes per episode, ``K`` shots, ``Q`` queries per class,
  ``M`` queries per episode, ``d`` embedding dimension.

Methods with a batched implementation live in ``BATCHED``; any other classifier registered in
``fewshot.classifiers.CLASSIFIERS`` is evaluated by a per-episode loop over
``make_classifier(name).fit(ArraySupport(...)).scores(queries)``.

Which information each method sees: the few-shot methods (``prototype``, ``simpleshot``, ``knn``) only the
support examples; ``zero-shot`` only the class prompt vectors; other registered methods (refinement) both.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fewshot._core import l2_normalise, plural
from fewshot.errors import InvalidInputError

# ----------------------------------------------------------------------------------------------- sampling


@dataclass
class Episodes:
    """A batch of N-way K-shot Q-query episodes as row indices.

    Attributes:
        classes: (E, N) int64 class codes of each episode (position n in the episode = local label n).
        support: (E, N, K) int64 rows of the support embedding matrix; ``support[e, n]`` are class n's shots.
        query: (E, N, Q) int64 rows of the query embedding matrix; ``query[e, n]`` are class n's queries.
        same_pool: True when support and query rows index the same matrix (drawn disjointly).
    """

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    same_pool: bool = False

    @property
    def n_episodes(self) -> int:
        return int(self.classes.shape[0])

    @property
    def n_way(self) -> int:
        return int(self.classes.shape[1])

    @property
    def n_shot(self) -> int:
        return int(self.support.shape[2])

    @property
    def n_query(self) -> int:
        return int(self.query.shape[2])

    def query_targets(self) -> np.ndarray:
        """(E, N·Q) int64 local label of each query (flattened class-major, like ``query.reshape(E, -1)``)."""
        return np.broadcast_to(np.repeat(np.arange(self.n_way), self.n_query), (self.n_episodes,
                                                                                self.n_way * self.n_query))


class _Groups:
    """Rows of a label vector grouped by class: ``rows[starts[c] : starts[c] + counts[c]]`` have label c."""

    def __init__(self, labels: np.ndarray, n_classes: int):
        labels = np.asarray(labels, np.int64)
        valid = labels >= 0
        idx = np.flatnonzero(valid)
        self.rows = idx[np.argsort(labels[idx], kind="stable")]
        self.counts = np.bincount(labels[idx], minlength=n_classes).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)


def _choose(counts: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """For each entry of ``counts`` (any shape S), m distinct positions in [0, count) in uniformly random order.
    Returns (*S, m) int64. Every count must be >= m.

    Small m relative to the largest count: Floyd's algorithm, O(size · m²); otherwise random keys +
    argpartition, O(size · max count). Either way a uniform random subset, then a uniform random order."""
    counts = np.asarray(counts, np.int64)
    width = int(counts.max())
    if m * m < width:
        pos = np.empty((*counts.shape, m), np.int64)
        for i in range(m):                    # Floyd: for j = n-m .. n-1: t ~ U{0..j}; take t, or j if t taken
            j = counts - m + i
            t = np.floor(rng.random(counts.shape) * (j + 1)).astype(np.int64)
            t = np.minimum(t, j)
            taken = (pos[..., :i] == t[..., None]).any(-1) if i else np.zeros(counts.shape, bool)
            pos[..., i] = np.where(taken, j, t)
        keys = cast(np.ndarray, rng.random(pos.shape, dtype=np.float32))  # numpy stubs pick the scalar overload
    else:
        keys = rng.random((*counts.shape, width), dtype=np.float32)
        keys[np.arange(width) >= counts[..., None]] = 2.0   # beyond the class: never chosen
        if m < width:
            pos = np.argpartition(keys, m - 1, axis=-1)[..., :m]
        else:
            pos = np.broadcast_to(np.arange(width), keys.shape).copy()
        keys = np.take_along_axis(keys, pos, axis=-1)
    return np.take_along_axis(pos, np.argsort(keys, axis=-1), axis=-1)  # random order inside the chosen set


def sample_episodes(support_labels: np.ndarray, query_labels: np.ndarray | None = None, *, n_way: int,
                    n_shot: int, n_query: int, n_episodes: int, seed: int | np.random.Generator = 0,
                    chunk_size: int = 2000) -> Episodes:
    """Sample ``n_episodes`` N-way K-shot Q-query episodes.

    Args:
        support_labels: (Ms,) int class codes of the support (TRAIN) rows; negative codes are ignored.
        query_labels: (Mq,) int class codes of the query (TEST) rows, in the same code space; ``None`` when
            support and queries come from one pool (then each class's K + Q items are drawn without
            replacement and split, so support and query never overlap).
        n_way, n_shot, n_query, n_episodes: N, K, Q, E.
        seed: an int seed or a ``numpy.random.Generator``.
        chunk_size: episodes sampled per vectorised step (bounds memory).

    Classes are drawn uniformly, without replacement within an episode, from the query labels' classes that
    have >= Q queries and >= K shots (>= K + Q items for one pool).

    Returns:
        ``Episodes`` with classes (E, N), support (E, N, K), query (E, N, Q).
    """
    for name, value, low in (("n_way", n_way, 1), ("n_shot", n_shot, 1), ("n_query", n_query, 1),
                             ("n_episodes", n_episodes, 1)):
        if int(value) < low:
            raise InvalidInputError(f"{name} must be >= {low}, got {value}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    support_labels = np.asarray(support_labels, np.int64)
    same = query_labels is None
    query_labels = support_labels if same else np.asarray(query_labels, np.int64)
    n_classes = int(max(support_labels.max(initial=-1), query_labels.max(initial=-1))) + 1
    sup = _Groups(support_labels, n_classes)
    qry = sup if same else _Groups(query_labels, n_classes)
    if same:
        eligible = np.flatnonzero(sup.counts >= n_shot + n_query)
        need = f">= {n_shot + n_query} items (K + Q, one pool)"
    else:
        eligible = np.flatnonzero((qry.counts >= n_query) & (sup.counts >= n_shot))
        need = f">= {n_shot} support and >= {n_query} query items"
    if len(eligible) < n_way:
        verb = "has" if len(eligible) == 1 else "have"
        raise InvalidInputError(f"n_way={n_way} but only {plural(len(eligible), 'class', 'classes')} {verb} {need}; "
                                "lower n_way, n_shot or n_query")
    classes, support, query = [], [], []
    for start in range(0, n_episodes, chunk_size):
        e = min(chunk_size, n_episodes - start)
        cls = eligible[_choose(np.full(e, len(eligible)), n_way, rng)]  # (e, N)
        if same:
            pos = _choose(sup.counts[cls], n_shot + n_query, rng)       # (e, N, K+Q)
            rows = sup.rows[sup.starts[cls][..., None] + pos]
            support.append(rows[..., :n_shot])
            query.append(rows[..., n_shot:])
        else:
            support.append(sup.rows[sup.starts[cls][..., None] + _choose(sup.counts[cls], n_shot, rng)])
            query.append(qry.rows[qry.starts[cls][..., None] + _choose(qry.counts[cls], n_query, rng)])
        classes.append(cls)
    return Episodes(np.concatenate(classes), np.concatenate(support), np.concatenate(query), same)


def sample_shots(labels: np.ndarray, classes: np.ndarray, n_shot: int, n_repeats: int,
                 seed: int | np.random.Generator = 0) -> np.ndarray:
    """K shots of every class in ``classes``, ``n_repeats`` times (all-classes mode).

    Args:
        labels: (Ms,) int class codes of the support rows.
        classes: (C,) class codes to draw shots for.
    Returns:
        (R, C, K) int64 support rows; each repeat is an independent draw.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    classes = np.asarray(classes, np.int64)
    groups = _Groups(np.asarray(labels, np.int64), int(max(classes.max(), np.max(labels))) + 1)
    short = classes[groups.counts[classes] < n_shot]
    if len(short):
        raise InvalidInputError(f"{plural(len(short), 'class', 'classes')} {'has' if len(short) == 1 else 'have'} "
                                f"fewer than n_shot={n_shot} support items "
                                f"(codes {short[:5].tolist()}); lower n_shot")
    counts = np.broadcast_to(groups.counts[classes], (n_repeats, len(classes)))
    return groups.rows[groups.starts[classes][None, :, None] + _choose(counts, n_shot, rng)]


# ----------------------------------------------------------------------------------------------- scoring
# Batched scorers are plain numpy (BLAS matmul over stacks of episodes): importing torch alone costs ~700 MiB
# of resident memory, more than the whole evaluation needs.

def _bmm_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, M, d) × (B, C, d) → (B, M, C) = a @ bᵀ per batch item. bᵀ is made contiguous first: numpy's
    stacked matmul leaves BLAS for a transposed view and gets ~10x slower for C > ~8."""
    return np.matmul(a, np.ascontiguousarray(np.swapaxes(b, -1, -2)))


def prototype_scores(support: np.ndarray, queries: np.ndarray, class_vectors: np.ndarray | None = None,
                     **_: Any) -> np.ndarray:
    """Cosine to normalised class means (``PrototypeClassifier`` without prompt vectors).
    support (B, C, K, d), queries (B, M, d) → (B, M, C)."""
    return _bmm_t(queries, l2_normalise(support.sum(2)))     # sum: same direction as the mean, one pass less


def prototype_l2_scores(support: np.ndarray, queries: np.ndarray, class_vectors: np.ndarray | None = None,
                        **_: Any) -> np.ndarray:
    """Negative Euclidean distance to (un-normalised) class means: Snell et al.'s ProtoNet as easyfsl's
    ``PrototypicalNetworks`` computes it (``-torch.cdist``). support (B, C, K, d), queries (B, M, d) →
    (B, M, C)."""
    protos = support.mean(2)                                                   # (B, C, d)
    d2 = (np.einsum("bmd,bmd->bm", queries, queries)[..., None] - 2 * _bmm_t(queries, protos)
          + np.einsum("bcd,bcd->bc", protos, protos)[:, None, :])
    return -np.sqrt(np.maximum(d2, 0.0))


def simpleshot_scores(support: np.ndarray, queries: np.ndarray, class_vectors: np.ndarray | None = None,
                      **_: Any) -> np.ndarray:
    """SimpleShot CL2N: subtract the episode's support mean from prototypes and queries, L2-normalise, cosine.
    support (B, C, K, d), queries (B, M, d) → (B, M, C)."""
    mean = support.mean((1, 2))[:, None, :]                                   # (B, 1, d)
    protos = l2_normalise(support.mean(2) - mean)                               # (B, C, d)
    # (q - m)·p / |q - m| without materialising q - m (B, M, d): |q - m|² = |q|² - 2 q·m + |m|²
    qp = _bmm_t(queries, np.concatenate([protos, mean], axis=1))              # (B, M, C + 1)
    sq = np.einsum("bmd,bmd->bm", queries, queries)[..., None] - 2 * qp[..., -1:] \
        + np.einsum("bkd,bkd->bk", mean, mean)[..., None]
    mp = np.einsum("bkd,bcd->bkc", mean, protos)                              # (B, 1, C)
    return (qp[..., :-1] - mp) / np.maximum(np.sqrt(np.maximum(sq, 0.0)), 1e-12)


def knn_scores(support: np.ndarray, queries: np.ndarray, class_vectors: np.ndarray | None = None,
               k: int = 5, **_: Any) -> np.ndarray:
    """``KNNClassifier``: a class scores its best similarity if that neighbour is among the query's k nearest
    support items, else the k-th similarity minus 1e-3. support (B, C, K, d), queries (B, M, d) → (B, M, C)."""
    b, c, shots, d = support.shape
    sims = _bmm_t(queries, support.reshape(b, c * shots, d))                        # (B, M, C·K)
    k = min(int(k), c * shots)
    width = c * shots          # k-th largest: sort is faster for short rows, partition for long ones
    kth = (np.sort(sims, axis=-1) if width <= 64 else np.partition(sims, width - k, axis=-1))[..., width - k, None]
    best = sims.reshape(b, -1, c, shots).max(-1)                                     # (B, M, C)
    return np.where(best >= kth, best, kth - np.float32(1e-3))


def zero_shot_scores(support: np.ndarray, queries: np.ndarray, class_vectors: np.ndarray | None = None,
                     **_: Any) -> np.ndarray:
    """Cosine to class prompt vectors. class_vectors (B, C, d), queries (B, M, d) → (B, M, C)."""
    if class_vectors is None:
        raise InvalidInputError("zero-shot needs class prompt vectors (a text or CLIP encoder); this encoder "
                                "or data set has none")
    return _bmm_t(queries, class_vectors)


#: method name → batched scorer(support (B, C, K, d), queries (B, M, d), class_vectors (B, C, d) | None, **cfg)
BATCHED: dict[str, Callable[..., np.ndarray]] = {
    "prototype": prototype_scores,
    "prototype-l2": prototype_l2_scores,
    "simpleshot": simpleshot_scores,
    "knn": knn_scores,
    "zero-shot": zero_shot_scores,
}


def available_methods() -> list[str]:
    """Batched methods plus every classifier in the registry."""
    from fewshot.classifiers import CLASSIFIERS
    return sorted(set(BATCHED) | set(CLASSIFIERS))


def looped_scores(method: str, support: np.ndarray, queries: np.ndarray, class_vectors: np.ndarray | None = None,
                  **config: Any) -> np.ndarray:
    """Reference / fallback: score each episode with the registered classifier.
    support (B, C, K, d), queries (B, M, d), class_vectors (B, C, d) | None → (B, M, C) float32."""
    from fewshot.classifiers import ArraySupport, make_classifier

    b, c, shots, d = support.shape
    labels = np.repeat(np.arange(c), shots)
    out = np.empty((b, queries.shape[1], c), np.float32)
    for i in range(b):
        cv = None if class_vectors is None else class_vectors[i]
        sup = ArraySupport(support[i].reshape(c * shots, d), labels, n_classes=c, class_vectors=cv)
        out[i] = make_classifier(method, **config).fit(sup).scores(queries[i])
    return out


@dataclass
class EvalResult:
    """Per-episode accuracies (E,) and their summary; ``seconds`` = sampling + scoring wall time."""

    accuracies: np.ndarray
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def ci95(self) -> float:
        return confidence_interval(self.accuracies)


def confidence_interval(values: np.ndarray) -> float:
    """Half-width of the normal 95% interval of the mean: 1.96 · std / √E (population std, ddof=0)."""
    values = np.asarray(values, np.float64)
    return float(1.96 * values.std() / np.sqrt(len(values))) if len(values) else 0.0


def evaluate(method: str, support_x: np.ndarray, query_x: np.ndarray, support_rows: np.ndarray,
             query_rows: np.ndarray, targets: np.ndarray, class_vectors: np.ndarray | None = None,
             class_ids: np.ndarray | None = None, *, chunk_size: int = 250, batched: bool = True,
             progress: bool | None = None, **config: Any) -> np.ndarray:
    """Accuracy of ``method`` on each of B episodes.

    Args:
        support_x: (Ms, d) float32 support embeddings; query_x: (Mq, d) float32 query embeddings.
        support_rows: (B, C, K) rows of ``support_x``; class c of an episode is local label c.
        query_rows: (B, M) rows of ``query_x``; targets: (B, M) local labels in [0, C).
        class_vectors: (n_codes, d) prompt vectors of every class code, or None; class_ids: (B, C) the codes
            of each episode's classes (needed with class_vectors).
        chunk_size: episodes scored per batched step (peak memory ~ chunk · (M + C·K) · d · 4 bytes).
        batched: use the batched scorer when one exists (False forces the per-episode classifier loop).
        progress: the scoring bar: True / False forces it; None shows it once scoring has run 2 s.
        config: method options (e.g. ``k`` for knn).
    Returns:
        (B,) float64 accuracies in [0, 1]. Ties go to the lowest local label (first argmax).
    """
    from fewshot._progress import progress as policy_bar

    support_rows = np.asarray(support_rows)
    b, c, shots = support_rows.shape
    fast = batched and method in BATCHED
    if not fast:
        from fewshot.classifiers import CLASSIFIERS
        if method not in CLASSIFIERS:
            raise InvalidInputError(f"unknown method {method!r}; choose one of {available_methods()}")
        chunk_size = min(chunk_size, 50)
    if class_vectors is not None and class_ids is None:
        raise InvalidInputError("class_ids (B, C) are needed to look up class_vectors")
    xs = np.ascontiguousarray(support_x, np.float32)
    xq = np.ascontiguousarray(query_x, np.float32)
    cv = None if class_vectors is None else np.ascontiguousarray(class_vectors, np.float32)
    m = query_rows.shape[1]
    out = np.empty(b, np.float64)
    chunk_size = max(1, min(chunk_size, b))
    sup_buf = np.empty((chunk_size * c * shots, xs.shape[1]), np.float32)     # reused: no page faults per chunk
    qry_buf = np.empty((chunk_size * m, xq.shape[1]), np.float32)
    for start in policy_bar(range(0, b, chunk_size), desc=f"scoring {method}", show=progress, leave=False):
        stop = min(start + chunk_size, b)
        n = stop - start
        sup = np.take(xs, np.asarray(support_rows[start:stop]).reshape(-1), axis=0, out=sup_buf[:n * c * shots],
                      mode="clip")  # rows are valid by construction; 'clip' skips a buffered copy
        qry = np.take(xq, np.asarray(query_rows[start:stop]).reshape(-1), axis=0, out=qry_buf[:n * m], mode="clip")
        sup, qry = sup.reshape(n, c, shots, -1), qry.reshape(n, m, -1)
        vec = None if cv is None else cv[np.asarray(cast(np.ndarray, class_ids)[start:stop])]  # checked above
        scores = BATCHED[method](sup, qry, vec, **config) if fast else looped_scores(method, sup, qry, vec, **config)
        out[start:stop] = (scores.argmax(-1) == np.asarray(targets[start:stop])).mean(1)
    return out


def evaluate_episodes(method: str, support_x: np.ndarray, query_x: np.ndarray, episodes: Episodes,
                      class_vectors: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
    """(E,) accuracies of ``method`` on ``episodes`` (see ``evaluate``; query_x may be support_x)."""
    return evaluate(method, support_x, query_x, episodes.support, episodes.query.reshape(episodes.n_episodes, -1),
                    episodes.query_targets(), class_vectors,
                    episodes.classes if class_vectors is not None else None, **kwargs)


def run_episodic(method: str, support_x: np.ndarray, support_labels: np.ndarray,
                 query_x: np.ndarray | None = None, query_labels: np.ndarray | None = None, *, n_way: int,
                 n_shot: int, n_query: int, n_episodes: int, seed: int = 0,
                 class_vectors: np.ndarray | None = None, **kwargs: Any) -> EvalResult:
    """Sample and score episodes in one timed call. ``query_x``/``query_labels`` None → one pool (disjoint
    draws from ``support_x``). Labels are int codes shared with ``class_vectors`` rows."""
    t0 = time.perf_counter()
    eps = sample_episodes(support_labels, query_labels, n_way=n_way, n_shot=n_shot, n_query=n_query,
                          n_episodes=n_episodes, seed=seed)
    accs = evaluate_episodes(method, support_x, support_x if query_x is None else query_x, eps, class_vectors,
                             **kwargs)
    return EvalResult(accs, time.perf_counter() - t0)


def run_all_classes(method: str, support_x: np.ndarray, support_labels: np.ndarray, query_x: np.ndarray,
                    query_labels: np.ndarray, *, n_shot: int, n_repeats: int, seed: int = 0,
                    class_vectors: np.ndarray | None = None, **kwargs: Any) -> EvalResult:
    """Every class of the query set, K random shots each from the support set, all queries; ``n_repeats``
    independent shot draws. Labels are int codes; every query code must have >= K support items."""
    t0 = time.perf_counter()
    query_labels = np.asarray(query_labels, np.int64)
    support_labels = np.asarray(support_labels, np.int64)
    classes = np.unique(np.concatenate([np.unique(query_labels), np.unique(support_labels[support_labels >= 0])]))
    missing = np.setdiff1d(np.unique(query_labels), np.unique(support_labels))
    if len(missing):
        raise InvalidInputError(f"{len(missing)} query classes have no support items (codes "
                                f"{missing[:5].tolist()}); every test label must occur in TRAIN")
    rows = sample_shots(support_labels, classes, n_shot, n_repeats, seed)             # (R, C, K)
    local = np.searchsorted(classes, query_labels)                                    # code → column
    q_rows = np.broadcast_to(np.arange(len(query_labels)), (n_repeats, len(query_labels)))
    targets = np.broadcast_to(local, q_rows.shape)
    ids = np.broadcast_to(classes, (n_repeats, len(classes))) if class_vectors is not None else None
    kwargs.setdefault("chunk_size", 1)
    accs = evaluate(method, support_x, query_x, rows, q_rows, targets, class_vectors, ids, **kwargs)
    return EvalResult(accs, time.perf_counter() - t0)


def run_zero_shot(query_x: np.ndarray, query_labels: np.ndarray, class_vectors: np.ndarray,
                  chunk_size: int = 4096) -> EvalResult:
    """Zero-shot over every class: query_x (Mq, d), query_labels (Mq,) codes, class_vectors (C, d).
    Each query counts as one trial, so ci95 is the normal interval of a binomial proportion."""
    t0 = time.perf_counter()
    xq = np.ascontiguousarray(query_x, np.float32)
    cv = np.ascontiguousarray(class_vectors, np.float32)
    pred = np.concatenate([(xq[i:i + chunk_size] @ cv.T).argmax(1) for i in range(0, len(xq), chunk_size)])
    return EvalResult((pred == np.asarray(query_labels)).astype(np.float64), time.perf_counter() - t0)
