"""Prototype classifiers: ProtoNet (cosine to class means) and SimpleShot (CL2N: centre, then L2-normalise).

A class's text-prompt vector, when it has one, counts as ``prior_weight`` extra examples of the class, so a
class with only a description is classified zero-shot and one with both uses both.
"""
from __future__ import annotations

import numpy as np

from fewshot._core import l2_normalise
from fewshot.classifiers.base import Classifier, Support
from fewshot.errors import InvalidInputError


class PrototypeClassifier(Classifier):
    """Cosine similarity to class prototypes. Scores (n, C) in [-1, 1]."""

    name = "prototype"

    config_keys: tuple[str, ...] = ("prior_weight", "center")

    def __init__(self, prior_weight: float = 1.0, center: bool = False):
        super().__init__()
        if prior_weight < 0:
            raise InvalidInputError(f"prior_weight must be >= 0, got {prior_weight}")
        self.prior_weight = float(prior_weight)
        self.center = bool(center)

    def _fit(self, support: Support) -> None:
        counts = support.example_counts().astype(np.float64)
        class_vectors, has_vector = support.class_vectors()
        weight = self.prior_weight * has_vector
        sums = support.prototypes().astype(np.float64) * counts[:, None] + weight[:, None] * class_vectors
        prototypes = sums / np.maximum(counts + weight, 1e-12)[:, None]
        self.mean_ = np.zeros(support.dim, np.float32)
        if self.center and counts.sum() > 0:
            self.mean_ = ((support.prototypes() * counts[:, None]).sum(0) / counts.sum()).astype(np.float32)
            prototypes = prototypes - self.mean_
        self.prototypes_ = l2_normalise(prototypes).astype(np.float32)

    def transform_queries(self, queries: np.ndarray) -> np.ndarray:
        """Apply the same centring as the prototypes: (n, d) → (n, d)."""
        return l2_normalise(queries - self.mean_) if self.center else queries

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        return self.transform_queries(queries) @ self.prototypes_.T

    def held_out_scores(self, support: Support, folds: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """``Classifier.held_out_scores`` in closed form: each fold's prototypes are the support's class sums less
        the sums of the examples it leaves out ((C, d) per fold instead of a refit over all m examples), so that
        calibrating a large support after a change costs a few milliseconds. Same scores as the refits up to float
        rounding (tested); subclasses get the generic refits. On a trained IVF-PQ index the class sums are the exact
        ones while the left-out vectors are read back compressed (a refit would use compressed vectors throughout)."""
        if type(self) not in (PrototypeClassifier, SimpleShotClassifier):   # a subclass may fit or score otherwise
            return super().held_out_scores(support, folds)
        vectors, labels = support.examples()
        class_vectors, has_vector = support.class_vectors()
        C = support.n_classes
        weight = self.prior_weight * has_vector
        counts = support.example_counts().astype(np.float64)
        sums = support.prototypes().astype(np.float64) * counts[:, None]    # (C, d), as ``_fit`` reads them
        prior = weight[:, None] * class_vectors.astype(np.float64)
        out = []
        for block, rest in folds:
            queries = vectors[block]
            left_out = np.flatnonzero(~rest)
            if np.array_equal(left_out, np.sort(block)):     # as ``loo_folds`` makes them: the block is left out
                left_out, left = block, queries
            else:
                left = vectors[left_out]
            one_hot = np.zeros((C, len(left_out)), vectors.dtype)
            one_hot[labels[left_out], np.arange(len(left_out))] = 1.0
            fold_sums = sums - one_hot @ left                                 # (C, d) sums of ``rest``
            fold_counts = counts - one_hot.sum(1)
            fold_sums[fold_counts == 0] = 0.0      # exactly: a rounding residual would normalise to a direction
            if self.center and fold_counts.sum() > 0:
                mean = fold_sums.sum(0) / fold_counts.sum()
                prototypes = (fold_sums + prior) / np.maximum(fold_counts + weight, 1e-12)[:, None] - mean
                queries = l2_normalise(queries - mean)
            else:       # the mean's divisor cancels in the normalisation
                prototypes = fold_sums + prior
            out.append(queries @ l2_normalise(prototypes).T)
        return out


class SimpleShotClassifier(PrototypeClassifier):
    """SimpleShot (Wang et al. 2019) CL2N: subtract the support mean, L2-normalise, nearest prototype."""

    name = "simpleshot"

    config_keys = ("prior_weight",)

    def __init__(self, prior_weight: float = 1.0):
        super().__init__(prior_weight=prior_weight, center=True)

