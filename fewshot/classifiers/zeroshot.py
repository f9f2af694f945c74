"""Zero-shot: cosine similarity to each class's text-prompt vector (template ensemble of its name/description)."""
from __future__ import annotations

import numpy as np

from fewshot.classifiers.base import Classifier, Support
from fewshot.errors import NotFittedError


class ZeroShotClassifier(Classifier):
    """Scores (n, C) = queries @ class_vectors.T; classes without a prompt vector score -1."""

    name = "zero-shot"
    logit_scale = 50.0

    def _fit(self, support: Support) -> None:
        vectors, mask = support.class_vectors()
        if not mask.any():
            raise NotFittedError("zero-shot needs class names or descriptions; no class has a prompt vector")
        self.class_vectors_ = vectors
        self.mask_ = mask

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        return np.where(self.mask_[None, :], queries @ self.class_vectors_.T, -1.0)
