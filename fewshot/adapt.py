"""Adaptation to a target distribution from unlabeled target inputs (transductive / unsupervised).

Each method is fitted on the support view plus an unlabeled pool U (u, d) of target embeddings and then acts as
a *view*: ``wrap(support)`` gives the classifier an adapted ``Support``, ``transform_queries`` maps queries the
same way. The index itself is never modified, so undoing an adaptation restores predictions exactly.

Methods and trade-offs:

``"recenter"``  subtract the target mean, re-normalise (SimpleShot-style centring on the *target* mean). Cheap and
                safe; removes the shared component that makes all sentences look alike. Needs a few dozen inputs.
``"coral"``     CORAL: re-colour support-side vectors (examples and prompt vectors) with the target covariance after
                whitening with their own; queries are only centred. Helps when support and target come from
                different sources (e.g. descriptions vs user queries); needs more unlabeled data than dimensions
                to be stable (shrinkage is applied).
``"soft-kmeans"`` transductive prototype refinement: starting from the prototypes (or prompt vectors at 0 shots),
                a few soft k-means steps over U pull each prototype toward the target inputs it explains.
                Largest gains at 0-1 shots when classes are balanced-ish in U; can drift when U holds many
                inputs of no class (use with open-set rejection off or a clean pool).
``"recenter+soft-kmeans"`` both, in that order.
``"anchored-kmeans"`` transductive soft k-means with a fixed anchor (the method to use at 0-10 shots with a pool of
                the classes' own inputs). Queries and examples are centred on the pool mean, prompt vectors
                (class names / descriptions) on *their own* mean (the text–query gap), all re-normalised. The
                start P0 (C, d) is l2n(Σ examples + ``name_weight`` · name) per class (the name alone at 0 shots).
                Then ``steps`` times: R = softmax(``temperature`` · Q Pᵀ) (u, C) and
                P = l2n(Rᵀ Q / R.sum(0) + ``anchor`` · (n_c + has-name_c) · P0): the soft *mean* of the pool
                inputs a class explains, plus P0 weighted by the class's labelled vectors, so the pull toward the
                start does not fade with the pool size (it does in ``soft-kmeans``) and grows with the shots.
                ``balanced=True`` Sinkhorn-normalises R to equal class sizes: better when the pool holds every
                class in about equal numbers, worse under skew (10x imbalance costs points). A pool of fewer than
                ``min_per_class`` (5) inputs per class is too small to adapt on: the method then falls back to
                no adaptation (``wrap`` returns the support, queries pass unchanged; ``fallback_`` says why).
                The temperature is fixed (the engine calibrates only ``*soft-kmeans`` temperatures).
                Defaults chosen leave-one-data-set-out: benchmarks/results/transductive.md.
``"mmd"``       MMD-regularised linear probe: a support-side linear map ``A`` (d × d, starting at the identity) and
                a linear head (starting at the prototypes) are trained together with cross-entropy on the support
                examples (and prompt vectors) plus ``mmd_weight`` × the squared maximum mean discrepancy
                (Gaussian kernels at 0.5/1/2 × the median distance) between the mapped support and the target
                pool, relative to its value before training, plus ``identity_weight`` · ||A − I||². The classifier
                then fits on the mapped support (queries are not mapped), so ``refine("linear")`` on top gives
                the probe on the aligned support. Like CORAL it helps when support and target differ in style;
                it costs seconds of torch on CPU (``steps`` Adam steps, ≤ 512 target inputs per step),
                and assumes the pool is mostly made of the known classes.
"""
from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from fewshot._core import check_float, check_int, check_vectors, l2_normalise, softmax
from fewshot.classifiers.base import ArraySupport, Support
from fewshot.errors import InvalidInputError

AdaptMethod = Literal["recenter", "coral", "soft-kmeans", "recenter+soft-kmeans", "anchored-kmeans", "mmd"]
ADAPT_METHODS: tuple[str, ...] = get_args(AdaptMethod)

#: anchored-kmeans defaults: per constant, the value most of the three leave-one-data-set-out folds chose
#: (benchmarks/results/transductive.md)
ANCHORED_TEMPERATURE = 20.0
ANCHORED_STEPS = 3
ANCHOR = 0.1
NAME_WEIGHT = 3.0
MIN_PER_CLASS = 5


class Adaptation:
    """A fitted map of support data and queries into the adapted space."""

    method: str

    def __init__(self, method: AdaptMethod = "recenter", steps: int | None = None, temperature: float | None = None,
                 shrinkage: float = 0.1, mmd_weight: float = 1.0, identity_weight: float = 1.0, seed: int = 0,
                 anchor: float = ANCHOR, name_weight: float = NAME_WEIGHT, balanced: bool = False,
                 min_per_class: int = MIN_PER_CLASS):
        if method not in ADAPT_METHODS:
            raise InvalidInputError(f"unknown adaptation method {method!r}; choose one of {ADAPT_METHODS}")
        default_steps = {"mmd": 100, "anchored-kmeans": ANCHORED_STEPS}.get(method, 5)
        steps = check_int("steps", default_steps if steps is None else steps, 1)
        if temperature is not None:
            temperature = check_float("temperature", temperature, 0.0)
        self.method, self.steps, self.temperature = method, steps, temperature
        self.shrinkage = check_float("shrinkage", shrinkage, 0.0, inclusive=True)
        if self.shrinkage > 1:  # a convex mix of the covariance and a scaled identity
            raise InvalidInputError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
        self.mmd_weight = check_float("mmd_weight", mmd_weight, 0.0, inclusive=True)
        self.identity_weight = check_float("identity_weight", identity_weight, 0.0, inclusive=True)
        self.seed = check_int("seed", seed, 0)
        # anchored-kmeans only (accepted, and checked, for every method, like ``shrinkage``)
        self.anchor = check_float("anchor", anchor, 0.0, inclusive=True)
        self.name_weight = check_float("name_weight", name_weight, 0.0, inclusive=True)
        if not isinstance(balanced, (bool, np.bool_)):
            raise InvalidInputError(f"balanced must be True or False, got {balanced!r}")
        self.balanced = bool(balanced)
        self.min_per_class = check_int("min_per_class", min_per_class, 0)
        self.fallback_: str | None = None          # why anchored-kmeans left the support as it is, if it did
        self.class_mean_: np.ndarray | None = None  # (d,) mean of the prompt vectors (anchored-kmeans)
        self.support_map_: np.ndarray | None = None
        self.mmd_history_: tuple[float, float] | None = None  # squared MMD (before, after)
        self.mean_: np.ndarray | None = None
        self.coral_: np.ndarray | None = None
        self.source_mean_: np.ndarray | None = None
        self.prototypes_: np.ndarray | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, support: Support, unlabeled: np.ndarray) -> Adaptation:
        """Fit on the support view and (u, d) unlabeled target embeddings (u ≥ 2)."""
        unlabeled = check_vectors(unlabeled, support.dim, "unlabeled vectors")
        if len(unlabeled) < 2:
            raise InvalidInputError("adaptation needs at least 2 unlabeled inputs")
        if self.method == "anchored-kmeans":
            self._fit_anchored(support, unlabeled)
            return self
        if self.method in ("recenter", "recenter+soft-kmeans"):
            self.mean_ = unlabeled.mean(0)
        if self.method == "coral":
            self._fit_coral(support, unlabeled)
        if self.method.endswith("soft-kmeans"):
            self._fit_soft_kmeans(support, unlabeled)
        if self.method == "mmd":
            self._fit_mmd(support, unlabeled)
        return self

    def _fit_mmd(self, support: Support, unlabeled: np.ndarray) -> None:
        """Joint fit of the (d, d) support map and a (C, d) head; see the module docstring."""
        import torch

        x, y = _support_points(support)
        if len(x) < 2:
            raise InvalidInputError("MMD adaptation needs at least 2 support vectors (examples or prompt vectors)")
        gen = torch.Generator().manual_seed(self.seed)
        xs, ys, target = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(unlabeled)
        head0 = torch.zeros(support.n_classes, support.dim).index_add_(0, ys, xs)
        head = torch.nn.Parameter(torch.nn.functional.normalize(head0 + 1e-6, dim=1))
        a = torch.nn.Parameter(torch.eye(support.dim))
        eye = torch.eye(support.dim)
        n_target = min(len(unlabeled), 512)
        with torch.no_grad():  # kernel bandwidths from the median support–target distance, fixed throughout
            probe = target[torch.randperm(len(target), generator=gen)[:n_target]]
            median = torch.cdist(xs, probe).median().clamp(min=1e-3)
            bandwidths = [float(median) * f for f in (0.5, 1.0, 2.0)]
            mmd0 = max(float(_mmd2(xs, probe, bandwidths)), 1e-6)  # > 0 even when support ≈ pool
        opt = torch.optim.Adam([a, head], lr=1e-3)
        scale = self.temperature or 20.0
        for _ in range(self.steps):
            sample = target[torch.randperm(len(target), generator=gen)[:n_target]]
            z = torch.nn.functional.normalize(xs @ a, dim=1)
            logits = scale * z @ torch.nn.functional.normalize(head, dim=1).T
            loss = torch.nn.functional.cross_entropy(logits, ys) + \
                self.mmd_weight * _mmd2(z, sample, bandwidths) / mmd0 + \
                self.identity_weight * ((a - eye) ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            z = torch.nn.functional.normalize(xs @ a, dim=1)
            self.mmd_history_ = (mmd0, float(_mmd2(z, probe, bandwidths)))  # same target sample before/after
        self.support_map_ = a.detach().numpy().astype(np.float32)

    def _fit_coral(self, support: Support, unlabeled: np.ndarray) -> None:
        source, _ = _support_points(support)
        if len(source) < 2:
            raise InvalidInputError("CORAL needs at least 2 support vectors (examples or prompt vectors)")
        d = support.dim

        def shrunk_cov(x: np.ndarray) -> np.ndarray:
            cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((d, d))
            return (1 - self.shrinkage) * cov + self.shrinkage * (np.trace(cov) / d + 1e-6) * np.eye(d)

        def matrix_power(m: np.ndarray, p: float) -> np.ndarray:
            w, v = np.linalg.eigh(m)
            return (v * np.maximum(w, 1e-9) ** p) @ v.T

        self.source_mean_ = source.mean(0)
        self.mean_ = unlabeled.mean(0)
        self.coral_ = (matrix_power(shrunk_cov(source), -0.5) @ matrix_power(shrunk_cov(unlabeled), 0.5)
                       ).astype(np.float32)

    def _fit_soft_kmeans(self, support: Support, unlabeled: np.ndarray) -> None:
        view = self._map_view(support)
        queries = self.transform_queries(unlabeled)
        counts = view.example_counts().astype(np.float64)
        class_vectors, mask = view.class_vectors()
        sums = view.prototypes().astype(np.float64) * counts[:, None] + class_vectors * mask[:, None]
        weights = counts + mask
        if (weights == 0).any():
            raise InvalidInputError("every class needs an example or a prompt vector for soft k-means")
        temperature = self.temperature or 20.0
        prototypes = l2_normalise(sums / weights[:, None])
        for _ in range(self.steps):
            resp = softmax(temperature * queries @ prototypes.T)            # (u, C)
            prototypes = l2_normalise((sums + resp.T @ queries) / (weights + resp.sum(0))[:, None])
        self.prototypes_ = prototypes

    def _fit_anchored(self, support: Support, unlabeled: np.ndarray) -> None:
        """Anchored soft k-means over the (u, d) pool; see the module docstring. Leaves the adaptation as the
        identity (``fallback_`` says why) when the pool holds fewer than ``min_per_class`` inputs per class."""
        n_classes = support.n_classes
        if len(unlabeled) < self.min_per_class * n_classes:
            self.fallback_ = (f"pool of {len(unlabeled)} inputs < min_per_class ({self.min_per_class}) x "
                              f"{n_classes} classes: no adaptation")
            return
        self.mean_ = unlabeled.mean(0)
        class_vectors, mask = support.class_vectors()
        # prompt vectors are centred on their own mean (the text/query modality gap); with fewer than 2 that mean
        # is the vector itself, so they are centred on the pool mean like the examples
        self.class_mean_ = class_vectors[mask].mean(0) if mask.sum() >= 2 else self.mean_
        view = self._map_view(support)
        vectors, labels = view.examples()
        mapped_cv, _ = view.class_vectors()
        sums = np.zeros((n_classes, support.dim), np.float64)
        np.add.at(sums, labels, vectors)                                    # (C, d) sums of examples
        sums += self.name_weight * mapped_cv * mask[:, None]                # the name counts as name_weight examples
        if ((view.example_counts() == 0) & ~mask).any():
            raise InvalidInputError("every class needs an example or a prompt vector for anchored k-means")
        anchors = l2_normalise(sums).astype(np.float32)                     # (C, d) P0
        # each labelled vector of a class (example or prompt vector) anchors it with weight ``anchor``
        weight = (self.anchor * (view.example_counts() + mask)).astype(np.float32)[:, None]   # (C, 1)
        queries = self.transform_queries(unlabeled).astype(np.float32)      # (u, d)
        temperature = np.float32(self.temperature or ANCHORED_TEMPERATURE)
        prototypes = anchors
        for _ in range(self.steps):
            logits = temperature * queries @ prototypes.T                   # (u, C)
            resp = sinkhorn(logits) if self.balanced else softmax(logits)
            mass = np.maximum(resp.sum(0), 1e-9)[:, None]                   # (C, 1)
            prototypes = l2_normalise((queries.T @ resp).T / mass + weight * anchors).astype(np.float32)
        self.prototypes_ = prototypes

    # ------------------------------------------------------------------ applying
    def transform_queries(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) → (n, d) queries in the adapted space."""
        if self.mean_ is not None:
            return l2_normalise(queries - self.mean_)
        return queries

    def _transform_support_vectors(self, x: np.ndarray) -> np.ndarray:
        if self.support_map_ is not None:
            return l2_normalise(x @ self.support_map_) if len(x) else x
        if self.coral_ is not None:
            return l2_normalise((x - self.source_mean_) @ self.coral_)
        return self.transform_queries(x) if len(x) else x

    def _map_view(self, support: Support) -> ArraySupport:
        vectors, labels = support.examples()
        class_vectors, mask = support.class_vectors()
        mapped_cv = class_vectors.copy()
        if mask.any() and self.class_mean_ is not None:
            mapped_cv[mask] = l2_normalise(class_vectors[mask] - self.class_mean_)
        elif mask.any():
            mapped_cv[mask] = self._transform_support_vectors(class_vectors[mask])
        return ArraySupport(self._transform_support_vectors(vectors), labels, support.n_classes, mapped_cv, mask)

    def calibration_view(self, support: Support) -> Support:
        """The support mapped into the adapted space, without soft-k-means prototypes (which were fitted with
        every support example): what leave-one-out calibration should score."""
        if self.fallback_ is not None:
            return support
        return self._map_view(support)

    def wrap(self, support: Support) -> Support:
        """The adapted view a classifier is fitted on (``support`` itself after an anchored-kmeans fallback)."""
        if self.fallback_ is not None:
            return support
        view = self._map_view(support)
        if self.prototypes_ is not None:
            return RefinedPrototypeSupport(view, self.prototypes_)
        return view


def sinkhorn(logits: np.ndarray, iters: int = 10) -> np.ndarray:
    """(n, C) logits → (n, C) responsibilities whose rows sum to 1 and whose columns sum to about n / C (equal
    class sizes), by ``iters`` rounds of Sinkhorn–Knopp scaling of exp(logits)."""
    resp = np.exp(logits - logits.max(1, keepdims=True)).astype(np.float64)
    n, n_classes = resp.shape
    for _ in range(iters):
        resp *= (n / n_classes) / np.maximum(resp.sum(0, keepdims=True), 1e-30)
        resp /= resp.sum(1, keepdims=True)
    return resp.astype(np.float32)


def _support_points(support: Support) -> tuple[np.ndarray, np.ndarray]:
    """Support-side vectors an adaptation fits on: ((m + p, d) examples then prompt vectors, (m + p,) classes)."""
    vectors, labels = support.examples()
    class_vectors, mask = support.class_vectors()
    return (np.concatenate([vectors, class_vectors[mask]]),
            np.concatenate([labels, np.flatnonzero(mask)]).astype(np.int64))


def _mmd2(x, y, bandwidths: list[float]):
    """Biased squared MMD between (n, d) and (u, d) torch samples, summed over Gaussian kernel bandwidths."""
    import torch

    total: float | torch.Tensor = 0.0
    dxx, dyy, dxy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    for h in bandwidths:
        g = 2.0 * h * h
        total = total + torch.exp(-dxx / g).mean() + torch.exp(-dyy / g).mean() - 2 * torch.exp(-dxy / g).mean()
    return total


class RefinedPrototypeSupport(ArraySupport):
    """An ``ArraySupport`` whose prototypes come from soft k-means: every class behaves as one example at its
    refined prototype (prompt vectors are folded in already)."""

    def __init__(self, base: ArraySupport, prototypes: np.ndarray):
        super().__init__(base.vectors, base.labels, base.n_classes, prototypes)
        self._refined = prototypes

    def prototypes(self) -> np.ndarray:
        return self._refined

    def example_counts(self) -> np.ndarray:
        return np.ones(self.n_classes, np.int64)

    def class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        return self._refined, np.ones(self.n_classes, bool)
