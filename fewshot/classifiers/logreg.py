"""The plain baseline a user writes by hand: scikit-learn ``LogisticRegression`` on the frozen embeddings.

No prior, no text vectors, no tuning: ``LogisticRegression(C=C, max_iter=2000)`` fitted on the support
examples. Every benchmark table carries it (``logreg`` = C 10, ``logreg-c1`` = scikit-learn's default C 1), so that
what fewshot's own methods add is measured against it on the same embeddings and support draws.

Scores are the decision function divided by ``score_scale`` (logits of a few tens become cosine-like values);
probabilities are ``softmax(scores · logit_scale)`` with ``logit_scale = score_scale``, i.e. scikit-learn's own.
Classes without examples (description-only) get a score of -inf-like ``-1e4``: the baseline cannot use them.
"""
from __future__ import annotations

import numpy as np

from fewshot.classifiers.base import Classifier, Support
from fewshot.errors import InvalidInputError, NotFittedError


class LogisticRegressionClassifier(Classifier):
    """``sklearn.linear_model.LogisticRegression(C, max_iter)`` on support examples. Scores (n, C)."""

    name = "logreg"
    config_keys = ("C", "max_iter")
    score_scale = 20.0

    def __init__(self, C: float = 10.0, max_iter: int = 2000):
        super().__init__()
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
            raise InvalidInputError(f"C must be a number > 0, got {C!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise InvalidInputError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        self.C, self.max_iter = float(C), int(max_iter)
        self.logit_scale = self.score_scale

    def _fit(self, support: Support) -> None:
        from sklearn.linear_model import LogisticRegression

        x, y = support.examples()
        present = np.unique(y)
        if len(present) == 0:
            raise NotFittedError("logreg needs labelled examples; the support has none")
        self.W_ = np.zeros((support.n_classes, support.dim), np.float32)
        self.b_ = np.full(support.n_classes, -1e4 * self.score_scale, np.float32)  # classes without examples
        if len(present) == 1:  # one class: it always wins
            self.b_[present[0]] = 0.0
            return
        model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(x, y)
        coef = model.coef_ if len(present) > 2 else np.vstack([-model.coef_[0], model.coef_[0]]) / 2
        bias = model.intercept_ if len(present) > 2 else np.array([-model.intercept_[0], model.intercept_[0]]) / 2
        self.W_[model.classes_] = coef
        self.b_[model.classes_] = bias

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        return (queries @ self.W_.T + self.b_) / self.score_scale

    def state(self) -> dict[str, np.ndarray]:
        return {"W": self.W_, "b": self.b_}

    def restore(self, support: Support, state: dict[str, np.ndarray]) -> LogisticRegressionClassifier:
        W = self.saved_class_rows(state, "W", support, "logreg weights")
        self.support = support
        self.W_, self.b_ = W, np.asarray(state["b"], np.float32)
        return self


class DefaultLogisticRegressionClassifier(LogisticRegressionClassifier):
    """The same with scikit-learn's default ``C=1.0``."""

    name = "logreg-c1"

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        super().__init__(C=C, max_iter=max_iter)
