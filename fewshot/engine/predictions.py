"""What ``predict`` returns (``Prediction``) and the small helpers that build it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fewshot.errors import InvalidInputError


@dataclass(frozen=True)
class Prediction:
    """One input's result: ``label`` (None when rejected as unknown); ``score`` = confidence of the top label;
    ``top_k`` = [(label, confidence), ...] best first.

    The confidence of a label is P(that label is right | its score), calibrated on the support set by
    leave-one-out (``fewshot.openset``): it is comparable across inputs and ranks in-scope above out-of-scope
    inputs. The score it is conditioned on is the classifier score (``fewshot.openset.confidence``), or with
    ``reject=True`` the rejection score (``fewshot.openset.detector``), so that acceptance follows it.
    With fewer than 5 leave-one-out examples on a text engine (a zero-shot engine, one example per class) it is
    sigmoid-shaped around the rejection threshold (0.5 there: ``reject=True`` keeps the inputs scored
    >= 0.5); where neither applies (learned classifiers, no generic text to compare with) it is the softmax
    probability. ``FewShotEngine.score_meaning`` says which, and why. ``FewShotEngine.predict_proba`` always gives
    softmax probabilities that sum to 1."""

    label: str | None
    score: float
    top_k: list[tuple[str, float]] = field(default_factory=list)


def top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, C) → (n, k) column indices of the k best scores, best first (ties: lower column first). A partial
    sort: a full argsort of (256, 10,000) scores cost ~4 ms per query, over the 1 ms target at 10k classes."""
    if k == 1:
        return scores.argmax(1)[:, None]         # the first of tied maxima: the lower column
    if k >= scores.shape[1] or scores.shape[1] <= 64:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    cols = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    best = np.argsort(-np.take_along_axis(scores, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, best, axis=1)


@dataclass(frozen=True, eq=False)
class BatchPrediction:
    """n inputs' results as arrays (``FewShotEngine.predict_arrays``): the numbers of ``predict_vectors``'s list of
    ``Prediction`` without a Python object per input, so that large batches predicted from several threads run in
    parallel (numpy releases the interpreter lock; building objects holds it). The arrays are read-only.

    ``classes``: the engine's classes at prediction time (what the indices point into); ``top_k_index``: (n, k)
    int64 class indices, best first; ``top_k_score``: (n, k) float64 confidences (``Prediction.top_k``'s);
    ``accepted``: (n,) bool, False where the input was rejected as unknown (label None)."""

    classes: tuple[str, ...]
    top_k_index: np.ndarray
    top_k_score: np.ndarray
    accepted: np.ndarray

    @classmethod
    def from_scores(cls, classes: list[str], scores: np.ndarray, values: np.ndarray, accepted: np.ndarray,
                    top_k: int) -> BatchPrediction:
        """From (n, C) ``scores`` (ranking), (n, C) ``values`` (the confidences reported) and (n,) bool ``accepted``."""
        order = top_k_columns(scores, min(int(top_k), len(classes))).astype(np.int64, copy=False)
        shown = np.take_along_axis(values, order, axis=1).astype(np.float64, copy=False)
        ok = np.array(accepted, bool)
        for array in (order, shown, ok):
            array.setflags(write=False)
        return cls(tuple(classes), order, shown, ok)

    def __len__(self) -> int:
        return len(self.accepted)

    @property
    def label_index(self) -> np.ndarray:
        """(n,) int64 index into ``classes`` of each input's label; -1 where rejected."""
        return np.where(self.accepted, self.top_k_index[:, 0], -1)

    def _names(self) -> np.ndarray:
        """(C + 1,) object array: the class names, then None (what index -1 reads)."""
        return np.array([*self.classes, None], dtype=object)

    @property
    def labels(self) -> np.ndarray:
        """(n,) object array of label strings; None where rejected (``Prediction.label``)."""
        return self._names()[self.label_index]

    @property
    def top_k_labels(self) -> np.ndarray:
        """(n, k) object array of the label strings of ``top_k_index`` (``Prediction.top_k``'s labels)."""
        return self._names()[self.top_k_index]

    @property
    def scores(self) -> np.ndarray:
        """(n,) float64 confidence of the top label, also where rejected (``Prediction.score``)."""
        return self.top_k_score[:, 0]

    def predictions(self) -> list[Prediction]:
        """The same results as ``Prediction`` objects (what ``predict_vectors`` returns). The (n, k) arrays leave
        numpy as Python lists in one step each: indexing element by element cost most of a 16-query prediction."""
        classes = self.classes
        out = []
        for columns, row_values, ok in zip(self.top_k_index.tolist(), self.top_k_score.tolist(),
                                           self.accepted.tolist()):
            top = [(classes[c], v) for c, v in zip(columns, row_values)]     # Python floats already
            out.append(Prediction(top[0][0] if ok else None, top[0][1], top))
        return out


def check_top_k(top_k: Any) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise InvalidInputError(f"top_k must be an integer >= 1, got {top_k!r}")


def storable(x: Any) -> Any:
    """What of a raw example can be kept in JSON: texts and paths; in-memory images are not kept."""
    if isinstance(x, str):
        return x
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return None
