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



class SimpleShotClassifier(PrototypeClassifier):
    """SimpleShot (Wang et al. 2019) CL2N: subtract the support mean, L2-normalise, nearest prototype."""

    name = "simpleshot"

    config_keys = ("prior_weight",)

    def __init__(self, prior_weight: float = 1.0):
        super().__init__(prior_weight=prior_weight, center=True)

