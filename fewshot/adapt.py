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

AdaptMethod = Literal["recenter", "coral", "soft-kmeans", "recenter+soft-kmeans", "mmd"]
ADAPT_METHODS: tuple[str, ...] = get_args(AdaptMethod)


class Adaptation:
    """A fitted map of support data and queries into the adapted space."""

    method: str

    def __init__(self, method: AdaptMethod = "recenter", steps: int | None = None, temperature: float | None = None,
                 shrinkage: float = 0.1, mmd_weight: float = 1.0, identity_weight: float = 1.0, seed: int = 0):
        if method not in ADAPT_METHODS:
            raise InvalidInputError(f"unknown adaptation method {method!r}; choose one of {ADAPT_METHODS}")
        steps = check_int("steps", (100 if method == "mmd" else 5) if steps is None else steps, 1)
        if temperature is not None:
            temperature = check_float("temperature", temperature, 0.0)
        self.method, self.steps, self.temperature = method, steps, temperature
        self.shrinkage = check_float("shrinkage", shrinkage, 0.0, inclusive=True)
        if self.shrinkage > 1:  # a convex mix of the covariance and a scaled identity
            raise InvalidInputError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
        self.mmd_weight = check_float("mmd_weight", mmd_weight, 0.0, inclusive=True)
        self.identity_weight = check_float("identity_weight", identity_weight, 0.0, inclusive=True)
        self.seed = check_int("seed", seed, 0)
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
        if mask.any():
            mapped_cv[mask] = self._transform_support_vectors(class_vectors[mask])
        return ArraySupport(self._transform_support_vectors(vectors), labels, support.n_classes, mapped_cv, mask)

    def calibration_view(self, support: Support) -> ArraySupport:
        """The support mapped into the adapted space, without soft-k-means prototypes (which were fitted with
        every support example): what leave-one-out calibration should score."""
        return self._map_view(support)

    def wrap(self, support: Support) -> Support:
        """The adapted view a classifier is fitted on."""
        view = self._map_view(support)
        if self.prototypes_ is not None:
            return RefinedPrototypeSupport(view, self.prototypes_)
        return view


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
