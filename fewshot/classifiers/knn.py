"""k-nearest-neighbour over support examples (FAISS search on the index)."""
from __future__ import annotations

import numpy as np

from fewshot.classifiers.base import Classifier
from fewshot.errors import InvalidInputError


class KNNClassifier(Classifier):
    """Score of class c = the highest similarity among the query's k nearest support examples that belong to
    c; classes with no example among the k get the lowest retrieved similarity minus a margin. With k=1 this
    is 1-NN. Classes without examples cannot be predicted by kNN."""

    name = "knn"

    config_keys = ("k",)

    def __init__(self, k: int = 5):
        super().__init__()
        if int(k) < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        self.k = int(k)

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        support = self.support
        assert support is not None   # scores() checks that the classifier is fitted
        sims, classes = support.search(queries, self.k)
        valid = classes >= 0
        floor = np.where(valid, sims, np.inf).min(axis=1, keepdims=True)
        floor = np.where(np.isfinite(floor), floor, -1.0) - 1e-3
        scores = np.repeat(floor, support.n_classes, axis=1).astype(np.float32)
        rows = np.repeat(np.arange(len(queries)), self.k).reshape(len(queries), self.k)
        # visit neighbours from farthest to nearest so the nearest (highest) similarity wins per class
        for j in range(self.k - 1, -1, -1):
            ok = valid[:, j]
            scores[rows[ok, j], classes[ok, j]] = np.maximum(scores[rows[ok, j], classes[ok, j]], sims[ok, j])
        return scores

