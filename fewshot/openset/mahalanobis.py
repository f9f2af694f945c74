"""Relative Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance for improving near-OOD
detection"): an out-of-scope score from the support vectors alone, used by ``fewshot.openset.detector``.

Each class is a Gaussian with its own mean and one shared covariance (Ledoit-Wolf shrinkage of the within-class
scatter); the "background" is one Gaussian over all support vectors (Ledoit-Wolf too). For a query q,

    d²_c(q) = (q − μ_c)ᵀ Σ⁻¹ (q − μ_c)          (C distances, one per class)
    d²_0(q) = (q − μ_0)ᵀ Σ_0⁻¹ (q − μ_0)         (distance to the background)
    score(q) = d²_0(q) − min_c d²_c(q)           (higher = more in-scope)

Subtracting the background distance removes what every class shares (a query far from the whole support is not
penalised twice for directions the classes never vary in). Unlike a cosine to a prototype, the shared covariance
down-weights directions in which the classes' own examples spread.

Thresholds need scores of support examples as if they were new (leave-one-out, LOO). Refitting without each
example would cost n fits; ``RelativeMahalanobis.leave_one_out_scores`` gets them from the one fit instead.
Leaving x_i out of a class of n moves that class mean by (x_i − μ_c)/(n − 1) and takes exactly
n/(n − 1)·r_iᵀr_i off the within-class scatter (r_i = x_i − μ_c), so with the Ledoit-Wolf shrinkage kept at its
fitted value (α, the target's scale, and the normaliser N) the shared covariance loses a rank-one term,
Σ₋ᵢ = Σ − c·r_i r_iᵀ with c = (1 − α)·n/(N(n − 1)), and Sherman-Morrison gives every distance in closed form:

    own class:     d²₋ᵢ = (n/(n − 1))² · D/(1 − cD)            D = r_iᵀ Σ⁻¹ r_i
    other class k: d²₋ᵢ = d²_k(x_i) + c·(v_kᵀ Σ⁻¹ r_i)²/(1 − cD)   v_k = x_i − μ_k

and likewise for the background (the global mean and covariance without x_i). Leaving the covariance in the fit
would make support examples look far closer than new inputs (with p = 384 dimensions and N = 1,500 examples, a
point's own weight in Σ is large). A class mean of n − 1 examples also adds more noise to the own-class d² than a
mean of n does for a new input, (1 + 1/(n − 1)) against (1 + 1/n) times the in-class spread, so the own-class
d²₋ᵢ is rescaled by (1 + 1/n)/(1 + 1/(n − 1)) to put LOO scores on the deployed scale.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import cholesky, solve_triangular

from fewshot._core import class_sums
from fewshot.errors import InvalidInputError

MIN_RESIDUALS = 10     # within-class residual vectors needed to estimate the shared covariance
MAX_FIT_ROWS = 20_000  # larger supports are fitted on a random subset of this many rows (bounded time and memory)


class RelativeMahalanobis:
    """Relative Mahalanobis scores over class Gaussians with one shared covariance.

    Classes without examples are left out of the minimum (their d² is +inf)."""

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None         # (C,) examples per class
        self._within: np.ndarray | None = None        # (d, d) lower Cholesky factor of the shared covariance
        self._background: np.ndarray | None = None    # (d, d) lower Cholesky factor of the background one
        self._center: np.ndarray | None = None        # (d,) background mean
        self._white_means: np.ndarray | None = None   # (C, d) class means whitened by the shared covariance
        self._downdate: tuple[float, float] = (0.0, 0.0)  # (1 − α)/N within-class, (1 − α₀)/N background

    @staticmethod
    def can_fit(labels: np.ndarray, n_classes: int) -> bool:
        """Whether (n,) labels leave at least ``MIN_RESIDUALS`` within-class residuals (n − classes used)."""
        labels = np.asarray(labels)
        return len(labels) - len(np.unique(labels)) >= MIN_RESIDUALS and n_classes >= 1

    def fit(self, vectors: np.ndarray, labels: np.ndarray, n_classes: int,
            gram: np.ndarray | None = None) -> RelativeMahalanobis:
        """Fit from (n, d) vectors and (n,) class indices in [0, n_classes). ``gram``: their (d, d) ``vectorsᵀ
        vectors`` when the caller has it already (e.g. a fold's, as the whole support's minus the held-out
        block's, ``fold_grams``), which saves the one O(n·d²) product of the fit."""
        vectors = np.asarray(vectors, np.float64)
        labels = np.asarray(labels, np.int64)
        if not self.can_fit(labels, n_classes):
            raise InvalidInputError(f"relative Mahalanobis needs at least {MIN_RESIDUALS} within-class residuals "
                                    f"(examples beyond one per class), got {len(labels) - len(np.unique(labels))}")
        n = len(labels)
        if gram is None:
            gram = vectors.T @ vectors
        self.counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        sums = class_sums(vectors, labels, n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / self.counts[:, None]                          # NaN rows for empty classes
        filled = np.nan_to_num(means)
        self._center = vectors.mean(0)
        # scatter of the residuals from the gram: Σ (x − μ_c)(x − μ_c)ᵀ = Σ x xᵀ − Σ_c n_c μ_c μ_cᵀ
        norms = np.einsum("ij,ij->i", vectors, vectors)                # (n,) |x|²
        within, alpha = ledoit_wolf_from_scatter(
            gram - (filled.T * self.counts) @ filled,
            _fourth_moment(norms, np.einsum("ij,ij->i", vectors, filled[labels]), (filled ** 2).sum(1)[labels]), n)
        background, alpha0 = ledoit_wolf_from_scatter(
            gram - n * np.outer(self._center, self._center),
            _fourth_moment(norms, vectors @ self._center, float(self._center @ self._center)), n)
        self._within, self._background = _cholesky(within), _cholesky(background)
        self._white_means = _whiten(self._within, filled)
        self._downdate = ((1.0 - alpha) / n, (1.0 - alpha0) / n)
        return self

    def leave_one_out_scores(self, vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(m, d) vectors and (m,) labels of examples that were part of the fit → (m, C) per-class scores
        d²_0 − d²_c, each row computed as if that example had been left out of the fit (closed form, see the
        module docstring; ``.max(1)`` gives ``scores``). An example alone in its class leaves no class: −inf."""
        background, d2 = self.leave_one_out_parts(vectors, labels)
        return background[:, None] - d2

    def leave_one_out_parts(self, vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two terms of ``leave_one_out_scores``: ((m,) background d²_0, (m, C) class d²_c), each computed as
        if that example had been left out of the fit (+inf for empty classes, and for an example's own class
        when it is alone in it). ``−d2.min(1)`` is the LOO plain Mahalanobis score."""
        vectors = np.asarray(vectors, np.float64)
        labels = np.asarray(labels, np.int64)
        rows = np.arange(len(labels))
        assert self.counts is not None and self._within is not None and self._white_means is not None
        assert self._background is not None and self._center is not None
        n = self.counts[labels]
        total = float(self.counts.sum())
        white = _whiten(self._within, vectors)
        residual = white - self._white_means[labels]                      # whitened r_i
        own_d2 = (residual ** 2).sum(1)                                   # D
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(n > 1, self._downdate[0] * n / (n - 1.0), 0.0)   # alone: its residual is 0
            shrink = np.maximum(1.0 - c * own_d2, 1e-12)
            d2 = self._class_distances_white(white)
            along = (white * residual).sum(1)[:, None] - residual @ self._white_means.T   # v_kᵀ Σ⁻¹ r_i
            d2 = d2 + (c / shrink)[:, None] * along ** 2
            own = (n / (n - 1.0)) ** 2 * own_d2 / shrink * (1.0 + 1.0 / n) / (1.0 + 1.0 / (n - 1.0))
        d2[rows, labels] = np.where(n > 1, own, np.inf)
        d2[:, self.counts == 0] = np.inf
        background = _whiten(self._background, vectors - self._center)
        bg_d2 = (background ** 2).sum(1)
        c0 = self._downdate[1] * total / (total - 1.0)
        bg = (total / (total - 1.0)) ** 2 * bg_d2 / np.maximum(1.0 - c0 * bg_d2, 1e-12)
        return bg, d2

    def class_distances(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n, C) squared Mahalanobis distances to each class mean (+inf for empty classes)."""
        assert self._within is not None
        return self._class_distances_white(_whiten(self._within, np.asarray(queries, np.float64)))

    def _class_distances_white(self, white: np.ndarray) -> np.ndarray:
        """(n, d) queries already whitened by the shared covariance → (n, C) squared distances (+inf: empty)."""
        assert self._white_means is not None and self.counts is not None
        d2 = (white ** 2).sum(1)[:, None] - 2.0 * white @ self._white_means.T + (self._white_means ** 2).sum(1)[None]
        d2 = np.maximum(d2, 0.0)
        d2[:, self.counts == 0] = np.inf
        return d2

    def background_distances(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n,) squared Mahalanobis distances to the background Gaussian."""
        assert self._background is not None and self._center is not None
        white = _whiten(self._background, np.asarray(queries, np.float64) - self._center)
        return (white ** 2).sum(1)

    def class_scores(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n, C) relative Mahalanobis scores per class, d²_0 − d²_c (−inf for empty classes)."""
        return self.background_distances(queries)[:, None] - self.class_distances(queries)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n,) relative Mahalanobis score d²_0 − min_c d²_c (higher = more in-scope)."""
        return self.class_scores(queries).max(1)


def fit_rows(labels: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """(n,) bool mask of the rows to fit on, from (n,) class indices: None (all rows) up to ``MAX_FIT_ROWS``, else
    a random sample of about that many, stratified by class, that keeps min(n_c, 2) rows of every class c (so no
    class vanishes from the fit)."""
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if n <= MAX_FIT_ROWS:
        return None
    counts = np.bincount(labels)
    quota = np.maximum(np.floor(counts * (MAX_FIT_ROWS / n)), np.minimum(counts, 2)).astype(np.int64)
    order = np.lexsort((np.random.default_rng(seed).random(n), labels))   # by class, random within a class
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank < quota[labels]


def fold_grams(vectors: np.ndarray, fitted: list[np.ndarray]) -> list[np.ndarray]:
    """(n, d) vectors and (n,) bool masks of the rows each fold fits on → each fold's (d, d) gram ``xᵀx`` over its
    rows, as the whole set's gram minus that of the rows the fold leaves out (cheap when folds leave out few)."""
    vectors = np.asarray(vectors, np.float64)
    total = vectors.T @ vectors
    return [total - vectors[~rows].T @ vectors[~rows] for rows in fitted]


def ledoit_wolf_from_scatter(scatter: np.ndarray, fourth_moment: float, n: int) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of n centred rows X from their (d, d) scatter ``XᵀX`` and
    ``Σ_i ||x_i||⁴``: ((d, d) covariance, shrinkage), the same numbers as
    ``sklearn.covariance.ledoit_wolf(X, assume_centered=True)`` without the O(n·d²) products it spends on X
    itself (its ``Σ (X²)ᵀX²`` is exactly ``Σ_i ||x_i||⁴``)."""
    d = scatter.shape[0]
    emp_cov = scatter / n
    trace = float(np.trace(emp_cov))
    mu = trace / d
    if d == 1:
        return emp_cov.copy(), 0.0
    delta_ = float((emp_cov ** 2).sum())                      # Σ of the squared entries of XᵀX / n²
    beta = (fourth_moment / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu ** 2) / d
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    shrunk = (1.0 - shrinkage) * emp_cov
    shrunk.flat[:: d + 1] += shrinkage * mu
    return shrunk, float(shrinkage)


def _fourth_moment(norms: np.ndarray, dots: np.ndarray, mean_norms: np.ndarray | float) -> float:
    """Σ_i ||x_i − μ_i||⁴ from (n,) |x_i|², (n,) x_i·μ_i and |μ_i|² ((n,) or one number), i.e. of the residuals
    without forming them: a fresh (n, d) residual array costs more in page faults than the arithmetic."""
    return float((np.maximum(norms - 2.0 * dots + mean_norms, 0.0) ** 2).sum())


def _cholesky(covariance: np.ndarray) -> np.ndarray:
    """(d, d) symmetric positive semi-definite matrix → lower Cholesky factor of it plus a small ridge (1e-6 of
    the mean variance, or 1e-6 when all variances are 0: identical vectors)."""
    ridge = 1e-6 * (float(np.trace(covariance)) / len(covariance) or 1.0)
    shifted = covariance.copy()
    shifted.flat[:: len(covariance) + 1] += ridge
    return cholesky(shifted, lower=True, check_finite=False)   # inputs are checked finite where they enter


def _whiten(lower: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n, d) rows x → (n, d) rows L⁻¹x, so that ||L⁻¹x||² = xᵀ Σ⁻¹ x for Σ = L Lᵀ."""
    return solve_triangular(lower, x.T, lower=True).T
