"""Training-free fusion of a zero-shot prior with the support cache (Tip-Adapter-style affinity).

For a query ``q`` (L2-normalised) and class ``c`` with examples ``k_j`` (j in c), mean ``p_c`` over ``n_c``
examples and text-prompt vector ``t_c``::

    centroid_c(q) = cos(q, n_c · p_c + rho · t_c)          the text vector counts as ``rho`` examples
    cache_c(q)    = (1/beta) · log mean_{j in c} exp(beta · q · k_j)     soft nearest neighbour (Tip-Adapter
                                                                         affinity in log space)
    score_c(q)    = (1 - alpha) · centroid_c(q) + alpha · cache_c(q)

The two mixing parameters are ``rho`` (prior weight: 0 = support only, ∞ = zero-shot only) and ``alpha``
(cache weight: 0 = centroid only). ``beta`` (cache sharpness) is fixed a priori (20). Unless given, rho and
alpha are chosen on the support set alone by leave-one-out: every example of a class with at least two
examples is scored against the support without itself; the grid point with the best leave-one-out accuracy
wins (ties → larger mean margin → earlier grid point, i.e. the larger prior / smaller cache weight). With no
class of two or more examples (1-shot) leave-one-out cannot be fair to the held-out class, so the defaults
rho = 1, alpha = 0 are used. The logit scale of ``predict_proba`` is then fitted on the leave-one-out scores.
The test data is never seen.

Contract:
- 0 shots: every class scores ``cos(q, t_c)``, identical to ``ZeroShotClassifier``;
- ``prior_weight=0, cache_weight=0``: identical to ``PrototypeClassifier(prior_weight=0)``;
- a class with no examples scores its zero-shot similarity; one with neither examples nor text scores -1.

Scores are cosine-like, in [-1, 1].
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fewshot._core import class_sums
from fewshot.classifiers.base import Classifier, Support
from fewshot.errors import InvalidInputError, NotFittedError

#: search grids, fixed a priori (not tuned on any benchmark's test split); inf = zero-shot only
DEFAULT_PRIOR_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, float("inf"))
DEFAULT_CACHE_WEIGHTS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
DEFAULT_SCALES: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 70.0, 100.0)
#: memory bound of the leave-one-out selection: it scores ``loo_rows(m)`` held-out rows against all m examples,
#: (rows, m) float64 arrays — every row while m² ≤ MAX_LOO_ENTRIES (m ≤ 2,000: 32 MB), else a fixed random
#: sample of max(MIN_LOO_ROWS, MAX_LOO_ENTRIES // m) rows (20,000 examples: 1,000 rows, 160 MB instead of 3.2 GB)
MAX_LOO_ENTRIES = 4_000_000
MIN_LOO_ROWS = 1_000


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def loo_rows(m: int, seed: int = 0) -> np.ndarray:
    """Indices of the support rows a leave-one-out pass over m examples scores: all of them while m² ≤
    ``MAX_LOO_ENTRIES``, else a sorted random sample (fixed by ``seed``) of max(``MIN_LOO_ROWS``,
    ``MAX_LOO_ENTRIES // m``) of them."""
    if m * m <= MAX_LOO_ENTRIES:
        return np.arange(m)
    take = min(m, max(MIN_LOO_ROWS, MAX_LOO_ENTRIES // m))
    return np.sort(np.random.default_rng(seed).choice(m, take, replace=False))


def cache_scores(sims: np.ndarray, labels: np.ndarray, n_classes: int, beta: float,
                 exclude_self: bool = False, self_columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class soft-nearest-neighbour scores (1/beta)·log mean_{j in c} exp(beta·sims[:, j]).

    Args:
        sims: (n, m) similarities of n queries to the m support examples.
        labels: (m,) class index of each example.
        n_classes: C.
        beta: sharpness > 0 (→ 0: mean similarity; → ∞: maximum similarity).
        exclude_self: the queries are the support examples themselves (n == m): leave each out of its class.
        self_columns: (n,) the column of each query's own example when the queries are some of the support
            examples (``loo_rows``): each is left out of its class (implies ``exclude_self``).
    Returns:
        ((n, C) float64 scores, 0 where unavailable; (n, C) bool: the class has a usable example).
    """
    if beta <= 0:
        raise InvalidInputError(f"beta must be > 0, got {beta}")
    n, _ = sims.shape
    onehot = _onehot(labels, n_classes)
    counts = np.broadcast_to(onehot.sum(0), (n, n_classes)).copy()
    z = beta * np.asarray(sims, np.float64)
    if exclude_self or self_columns is not None:
        own = np.arange(n) if self_columns is None else np.asarray(self_columns, np.int64)
        counts[np.arange(n), labels[own]] -= 1
        z = z.copy()
        z[np.arange(n), own] = -np.inf
    zmax = np.max(np.where(np.isfinite(z), z, -1e30), axis=1, keepdims=True)
    sums = np.exp(z - zmax) @ onehot
    has = counts > 0
    out = (np.log(np.maximum(sums, 1e-300)) + zmax - np.log(np.maximum(counts, 1))) / beta
    return np.where(has, out, 0.0), has


def centroid_scores(q_dot_sum: np.ndarray, sum_sq: np.ndarray, zs: np.ndarray, sum_dot_t: np.ndarray,
                    counts: np.ndarray, has_text: np.ndarray, rho: float) -> np.ndarray:
    """cos(q, S_c + rho·t_c) from inner products, all (n, C): q·S_c, |S_c|², q·t_c, S_c·t_c, n_c.

    rho = inf → q·t_c. Classes with neither examples nor text → -1.
    """
    t = np.broadcast_to(has_text[None, :], zs.shape)
    if np.isinf(rho):
        cos_sup = q_dot_sum / np.sqrt(np.maximum(sum_sq, 1e-12))
        return np.where(t, zs, np.where(counts > 0, cos_sup, -1.0))
    r = rho * t
    dot = q_dot_sum + r * zs
    sq = sum_sq + 2 * r * sum_dot_t + r * r
    ok = (counts > 0) | t
    cos = dot / np.sqrt(np.maximum(sq, 1e-12))
    # a class with text but no examples at rho = 0 still scores zero-shot (its only evidence)
    cos = np.where((counts == 0) & t, zs, cos)
    return np.where(ok, cos, -1.0)


def _loo_objective(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean margin) of (m, C) scores."""
    rows = np.arange(len(labels))
    true = scores[rows, labels]
    other = scores.copy()
    other[rows, labels] = -np.inf
    margin = true - other.max(axis=1) if scores.shape[1] > 1 else true
    return float(np.mean(np.argmax(scores, axis=1) == labels)), float(np.mean(margin))


def fit_logit_scale(scores: np.ndarray, labels: np.ndarray, grid: Sequence[float] = DEFAULT_SCALES) -> float:
    """Scale s minimising the mean negative log-likelihood of softmax(s · scores) on labelled scores."""
    best, best_nll = float(grid[0]), np.inf
    rows = np.arange(len(labels))
    for s in grid:
        z = s * scores
        z = z - z.max(axis=1, keepdims=True)
        nll = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))
        if nll < best_nll - 1e-9:
            best, best_nll = float(s), nll
    return best


class FusionClassifier(Classifier):
    """Zero-shot prior + support centroid + soft-NN cache; mixing chosen by leave-one-out on the support.

    Args:
        prior_weight: ``rho`` >= 0 (``float('inf')`` = zero-shot only); ``None`` → leave-one-out over ``priors``.
        cache_weight: ``alpha`` in [0, 1]; ``None`` → leave-one-out over ``cache_weights``.
        beta: cache sharpness > 0.
        priors, cache_weights: the search grids.
        logit_scale: softmax scale for ``predict_proba``; ``None`` → fitted on the leave-one-out scores.
    Fitted: ``prior_weight_``, ``cache_weight_``, ``loo_accuracy_`` (NaN when nothing could be held out).
    """

    name = "fusion"

    def __init__(self, prior_weight: float | None = None, cache_weight: float | None = None, beta: float = 20.0,
                 priors: Sequence[float] = DEFAULT_PRIOR_WEIGHTS,
                 cache_weights: Sequence[float] = DEFAULT_CACHE_WEIGHTS, logit_scale: float | None = None):
        super().__init__()
        if prior_weight is not None and float(prior_weight) < 0:
            raise InvalidInputError(f"prior_weight must be >= 0 (inf = zero-shot only), got {prior_weight}")
        if cache_weight is not None and not 0.0 <= float(cache_weight) <= 1.0:
            raise InvalidInputError(f"cache_weight must be in [0, 1], got {cache_weight}")
        if float(beta) <= 0:
            raise InvalidInputError(f"beta must be > 0, got {beta}")
        if not len(priors) or not len(cache_weights):
            raise InvalidInputError("priors and cache_weights grids must be non-empty")
        self.prior_weight = None if prior_weight is None else float(prior_weight)
        self.cache_weight = None if cache_weight is None else float(cache_weight)
        self.beta = float(beta)
        self.priors = tuple(float(v) for v in priors)
        self.cache_weights = tuple(float(v) for v in cache_weights)
        self.fixed_scale = None if logit_scale is None else float(logit_scale)

    # ---------------------------------------------------------------- fitting
    def _bind(self, support: Support) -> None:
        vectors, labels = support.examples()
        C = support.n_classes
        self.keys_ = np.asarray(vectors, np.float32).reshape(len(labels), support.dim)
        self.labels_ = np.asarray(labels, np.int64)
        text, has_text = support.class_vectors()
        self.text_ = np.asarray(text, np.float32)
        self.has_text_ = np.asarray(has_text, bool)
        if len(self.labels_) == 0 and not self.has_text_.any():
            raise NotFittedError("fusion needs examples or class names/descriptions; the support has neither")
        self.counts_ = np.bincount(self.labels_, minlength=C).astype(np.float64)
        sums = class_sums(self.keys_, self.labels_, C)
        self.sums_ = sums
        self.sum_sq_ = (sums * sums).sum(1)
        self.sum_dot_t_ = (sums * self.text_.astype(np.float64)).sum(1)

    def _fit(self, support: Support) -> None:
        self._bind(support)
        self._select()

    def _select(self) -> None:
        priors = self.priors if self.prior_weight is None else (self.prior_weight,)
        alphas = self.cache_weights if self.cache_weight is None else (self.cache_weight,)
        if not self.has_text_.any():
            priors = (0.0,)
        y = self.labels_
        held = self.counts_[y] >= 2 if len(y) else np.zeros(0, bool)
        self.loo_accuracy_ = float("nan")
        if not held.any():
            self.prior_weight_ = self.prior_weight if self.prior_weight is not None else (
                1.0 if len(y) else float("inf"))
            self.cache_weight_ = self.cache_weight if self.cache_weight is not None else 0.0
            self.logit_scale = self.fixed_scale if self.fixed_scale is not None else (20.0 if len(y) else 50.0)
            return
        C = len(self.counts_)
        X = self.keys_.astype(np.float64)
        T = self.text_.astype(np.float64)
        scored = loo_rows(len(y))                       # every row, or a fixed sample on large supports
        y_all, y, held = y, y[scored], held[scored]
        Xs = X[scored]
        gram = Xs @ X.T                                 # (rows, m)
        onehot = _onehot(y_all, C)
        m = len(y)
        rows = np.arange(m)
        # leave-one-out inner products: remove each example from its own class
        q_dot_sum = gram @ onehot
        zs = Xs @ T.T
        counts = np.broadcast_to(self.counts_, (m, C)).copy()
        sum_sq = np.broadcast_to(self.sum_sq_, (m, C)).copy()
        sum_dot_t = np.broadcast_to(self.sum_dot_t_, (m, C)).copy()
        self_sq = gram[rows, scored]
        sum_sq[rows, y] += -2 * q_dot_sum[rows, y] + self_sq
        sum_dot_t[rows, y] -= zs[rows, y]
        q_dot_sum[rows, y] -= self_sq
        counts[rows, y] -= 1
        cache, has_cache = cache_scores(gram, y_all, C, self.beta, self_columns=scored)
        best_key, best = None, None
        for rho in priors:
            cent = centroid_scores(q_dot_sum, sum_sq, zs, sum_dot_t, counts, self.has_text_, rho)
            for alpha in alphas:
                s = np.where(has_cache, (1 - alpha) * cent + alpha * cache, cent)
                key = _loo_objective(s[held], y[held])
                if best_key is None or key > best_key:
                    best_key, best = key, (rho, alpha, s)
        assert best is not None and best_key is not None   # the grids are non-empty (checked in __init__)
        rho, alpha, s = best
        self.prior_weight_, self.cache_weight_ = float(rho), float(alpha)
        self.loo_accuracy_ = best_key[0]
        self.logit_scale = self.fixed_scale if self.fixed_scale is not None else fit_logit_scale(s[held], y[held])

    # ---------------------------------------------------------------- scoring
    def _scores(self, queries: np.ndarray) -> np.ndarray:
        q = queries.astype(np.float64)
        n, C = len(q), len(self.counts_)
        zs = q @ self.text_.T.astype(np.float64)
        b = lambda v: np.broadcast_to(v, (n, C))  # noqa: E731
        cent = centroid_scores(q @ self.sums_.T, b(self.sum_sq_), zs, b(self.sum_dot_t_), b(self.counts_),
                               self.has_text_, self.prior_weight_)
        if self.cache_weight_ == 0 or not len(self.labels_):
            return cent.astype(np.float32)
        cache, has = cache_scores(q @ self.keys_.T.astype(np.float64), self.labels_, C, self.beta)
        a = self.cache_weight_
        return np.where(has, (1 - a) * cent + a * cache, cent).astype(np.float32)

    # ---------------------------------------------------------------- persistence
    def get_config_dict(self) -> dict:  # strict JSON: infinities as "inf"
        js = lambda v: "inf" if v is not None and np.isinf(v) else v  # noqa: E731 - strict JSON has no inf
        return {"prior_weight": js(self.prior_weight), "cache_weight": self.cache_weight, "beta": self.beta,
                "priors": [js(v) for v in self.priors], "cache_weights": list(self.cache_weights),
                "logit_scale": self.fixed_scale}

    def state(self) -> dict[str, np.ndarray]:
        return {"prior_weight": np.float64(self.prior_weight_), "cache_weight": np.float64(self.cache_weight_),
                "logit_scale": np.float64(self.logit_scale)}

    def restore(self, support: Support, state: dict[str, np.ndarray]) -> FusionClassifier:
        """Rebind to ``support`` reusing the chosen (rho, alpha, scale): no new leave-one-out search."""
        if support.n_classes == 0:
            raise NotFittedError("no classes: add at least one class before classifying")
        self.support = support
        self._bind(support)
        self.prior_weight_ = float(state["prior_weight"])
        self.cache_weight_ = float(state["cache_weight"])
        self.logit_scale = float(state["logit_scale"])
        self.loo_accuracy_ = float("nan")
        return self
