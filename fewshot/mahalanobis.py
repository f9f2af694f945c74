"""Relative Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance for improving near-OOD
detection"): an out-of-scope score from the support vectors alone, used by ``fewshot.openset``.

Each class is a Gaussian with its own mean and one shared covariance (Ledoit-Wolf shrinkage of the within-class
scatter); the "background" is one Gaussian over all support vectors (Ledoit-Wolf too). For a query q,

    d²_c(q) = (q − μ_c)ᵀ Σ⁻¹ (q − μ_c)          (C distances, one per class)
    d²_0(q) = (q − μ_0)ᵀ Σ_0⁻¹ (q − μ_0)         (distance to the background)
    score(q) = d²_0(q) − min_c d²_c(q)           (higher = more in-scope)

Subtracting the background distance removes what every class shares (a query far from the whole support is not
penalised twice for directions the classes never vary in). Unlike a cosine to a prototype, the shared covariance
down-weights directions in which the classes' own examples spread.

A class mean estimated from n examples adds about p/n to the expected d² of a new in-class query (p: the
whitened dimension), so a leave-one-out example, whose class mean lost it, looks farther than a new query will.
``leave_out_scores`` rescales d² by (1 + 1/n_full)/(1 + 1/n_fold) per class to put LOO scores on the
deployed scale.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, solve_triangular

from .errors import InvalidInputError

MIN_RESIDUALS = 10     # within-class residual vectors needed to estimate the shared covariance
MAX_FIT_ROWS = 20_000  # larger supports are fitted on a random subset of this many rows (bounded time and memory)


class RelativeMahalanobis:
    """Relative Mahalanobis scores over class Gaussians with one shared covariance.

    Classes without examples are left out of the minimum (their d² is +inf)."""

    def __init__(self) -> None:
        self.means: np.ndarray | None = None          # (C, d) class means, NaN rows for empty classes
        self.counts: np.ndarray | None = None         # (C,) examples per class
        self._within: np.ndarray | None = None        # (d, d) lower Cholesky factor of the shared covariance
        self._background: np.ndarray | None = None    # (d, d) lower Cholesky factor of the background one
        self._center: np.ndarray | None = None        # (d,) background mean
        self._white_means: np.ndarray | None = None   # (C, d) class means whitened by the shared covariance

    @staticmethod
    def can_fit(labels: np.ndarray, n_classes: int) -> bool:
        """Whether (n,) labels leave at least ``MIN_RESIDUALS`` within-class residuals (n − classes used)."""
        labels = np.asarray(labels)
        return len(labels) - len(np.unique(labels)) >= MIN_RESIDUALS and n_classes >= 1

    def fit(self, vectors: np.ndarray, labels: np.ndarray, n_classes: int) -> "RelativeMahalanobis":
        """Fit from (n, d) vectors and (n,) class indices in [0, n_classes)."""
        from sklearn.covariance import ledoit_wolf

        vectors = np.asarray(vectors, np.float64)
        labels = np.asarray(labels, np.int64)
        if not self.can_fit(labels, n_classes):
            raise InvalidInputError(f"relative Mahalanobis needs at least {MIN_RESIDUALS} within-class residuals "
                                    f"(examples beyond one per class), got {len(labels) - len(np.unique(labels))}")
        self.counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
        sums = np.zeros((n_classes, vectors.shape[1]))
        np.add.at(sums, labels, vectors)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.means = sums / self.counts[:, None]
        self._center = vectors.mean(0)
        self._within = _cholesky(ledoit_wolf(vectors - self.means[labels], assume_centered=True)[0])
        self._background = _cholesky(ledoit_wolf(vectors - self._center, assume_centered=True)[0])
        self._white_means = _whiten(self._within, np.nan_to_num(self.means))
        return self

    def class_distances(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n, C) squared Mahalanobis distances to each class mean (+inf for empty classes)."""
        white = _whiten(self._within, np.asarray(queries, np.float64))
        d2 = (white ** 2).sum(1)[:, None] - 2.0 * white @ self._white_means.T + (self._white_means ** 2).sum(1)[None]
        d2 = np.maximum(d2, 0.0)
        d2[:, self.counts == 0] = np.inf
        return d2

    def background_distances(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n,) squared Mahalanobis distances to the background Gaussian."""
        white = _whiten(self._background, np.asarray(queries, np.float64) - self._center)
        return (white ** 2).sum(1)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) queries → (n,) relative Mahalanobis score d²_0 − min_c d²_c (higher = more in-scope)."""
        return self.background_distances(queries) - self.class_distances(queries).min(1)


def fit_rows(n: int, seed: int = 0) -> np.ndarray | None:
    """(n,) bool mask of the rows to fit on: None (all) up to ``MAX_FIT_ROWS``, else that many at random."""
    if n <= MAX_FIT_ROWS:
        return None
    rows = np.zeros(n, bool)
    rows[np.random.default_rng(seed).choice(n, MAX_FIT_ROWS, replace=False)] = True
    return rows


def leave_out_scores(vectors: np.ndarray, labels: np.ndarray, n_classes: int,
                     folds: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray | None = None) -> np.ndarray:
    """Relative Mahalanobis scores of held-out support examples, fitted without them.

    ``folds``: (block indices, (n,) bool mask of the examples fitted on) pairs, as ``fewshot.openset.loo_folds``
    gives; ``rows``: an optional (n,) bool mask that every fit is restricted to (``fit_rows``). Returns (n,)
    scores, NaN for examples in no block. Each fold's d² is rescaled per class by (1 + 1/n_full)/(1 + 1/n_fold),
    so that the class means' estimation noise matches the full fit's."""
    labels = np.asarray(labels, np.int64)
    rows = np.ones(len(labels), bool) if rows is None else np.asarray(rows, bool)
    full = np.bincount(labels[rows], minlength=n_classes).astype(np.float64)
    out = np.full(len(labels), np.nan)
    for block, rest in folds:
        model = RelativeMahalanobis().fit(vectors[rest & rows], labels[rest & rows], n_classes)
        kept = np.maximum(model.counts, 1.0)
        d2 = model.class_distances(vectors[block]) * ((1.0 + 1.0 / np.maximum(full, 1.0)) / (1.0 + 1.0 / kept))
        out[block] = model.background_distances(vectors[block]) - d2.min(1)
    return out


def _cholesky(covariance: np.ndarray) -> np.ndarray:
    """(d, d) symmetric positive semi-definite matrix → lower Cholesky factor of it plus a small ridge (1e-6 of
    the mean variance, or 1e-6 when all variances are 0: identical vectors)."""
    ridge = 1e-6 * (float(np.trace(covariance)) / len(covariance) or 1.0)
    factor, _ = cho_factor(covariance + ridge * np.eye(len(covariance)), lower=True)
    return np.tril(factor)


def _whiten(lower: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n, d) rows x → (n, d) rows L⁻¹x, so that ||L⁻¹x||² = xᵀ Σ⁻¹ x for Σ = L Lᵀ."""
    return solve_triangular(lower, x.T, lower=True).T
