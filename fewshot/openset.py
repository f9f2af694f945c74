"""Open-set rejection: decide when an input fits no registered class.

``MaxScoreRejector`` thresholds the top classifier score. The threshold is chosen on the support set alone:
each support example is scored leave-one-out against the other examples (its own class's prototype without it),
and the threshold is the ``keep``-quantile from below of those top scores, so about ``keep`` of in-scope inputs
are accepted. Classes with a single example or only a description use their prompt-vector score instead.
"""
from __future__ import annotations

import numpy as np

from .classifiers.base import ArraySupport, Support


class MaxScoreRejector:
    """Accept an input when its top score ≥ threshold (chosen from support, never from test data)."""

    def __init__(self, keep: float = 0.95, max_loo_examples: int = 2000, seed: int = 0):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        self.keep, self.max_loo_examples, self.seed = keep, max_loo_examples, seed
        self.threshold_: float = -np.inf

    def fit(self, support: Support, classifier_name: str = "prototype",
            classifier_config: dict | None = None) -> "MaxScoreRejector":
        """Leave-one-out top scores of support examples → threshold. Falls back to no rejection (-inf) when
        there are too few examples to estimate it."""
        from .classifiers import make_classifier

        vectors, labels = support.examples()
        class_vectors, mask = support.class_vectors()
        counts = np.bincount(labels, minlength=support.n_classes)
        eligible = np.flatnonzero((counts[labels] >= 2) | mask[labels])
        if len(eligible) < 5:
            self.threshold_ = -np.inf
            return self
        rng = np.random.default_rng(self.seed)
        if len(eligible) > self.max_loo_examples:
            eligible = rng.choice(eligible, self.max_loo_examples, replace=False)
        top = []
        # leave-one-out in blocks: drop a block of examples, score it against the rest
        blocks = np.array_split(rng.permutation(eligible), max(1, min(10, len(eligible))))
        for block in blocks:
            keep_rows = np.ones(len(labels), bool)
            keep_rows[block] = False
            loo = ArraySupport(vectors[keep_rows], labels[keep_rows], support.n_classes, class_vectors, mask)
            clf = make_classifier(classifier_name, **(classifier_config or {})).fit(loo)
            top.append(clf.scores(vectors[block]).max(axis=1))
        self.threshold_ = float(np.quantile(np.concatenate(top), 1.0 - self.keep))
        return self

    def accept(self, scores: np.ndarray, probs: np.ndarray | None = None) -> np.ndarray:
        """(n, C) scores → (n,) bool accepted."""
        return scores.max(axis=1) >= self.threshold_
