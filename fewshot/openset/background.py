"""Rejection without leave-one-out data (description-only classes, zero-shot engines, tiny supports).

With no held-out examples there is nothing to calibrate a threshold on, so it comes from two references that need
no examples, both measured with the classifier's own scores (so the threshold is on the score it is compared to):

* ``g`` — the median top score of generic everyday sentences (``generic_sentences()``, shipped with the package in
  ``fewshot/data/generic_sentences.txt``, embedded by the caller's encoder): how high off-topic text scores;
* ``n`` — the mean, over classes, of the top score a class's reference vector (its description vector, else its
  normalised example mean) gets from any *other* class: how high text about a neighbouring class scores;

and ``threshold = g + λ·(n − g)`` (``ZERO_SHOT_LAMBDA``, chosen leave-one-data-set-out in
``benchmarks/openset_carryover.py``). The generic quantile alone fails both ways (CLINC150's intents cover jokes,
weather and recipes, so generic text is in scope there; Banking77's descriptions score generic text so low that
nothing would be rejected); the mix adapts to how far apart the classes are. It is a zero-shot rule, not a
calibrated one: the benchmark reports what it costs.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import resources

import numpy as np

from fewshot.classifiers.base import Classifier, Support

ZERO_SHOT_LAMBDA = 0.4      # weight of the neighbouring-class reference n against the generic-text one g
GENERIC_FILE = "generic_sentences.txt"

Background = np.ndarray | Callable[[], np.ndarray | None] | None  # a callable may find no text after all


@lru_cache(maxsize=1)
def _sentences() -> tuple[str, ...]:
    text = resources.files("fewshot").joinpath("data").joinpath(GENERIC_FILE).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def generic_sentences() -> list[str]:
    """The shipped generic everyday sentences (about 100): embed them with the engine's encoder (and the same query
    transform as inputs) and pass them as ``OpenSetDetector.fit(..., background=...)``."""
    return list(_sentences())


def reference_vectors(support: Support) -> tuple[np.ndarray, np.ndarray]:
    """((k, d) one vector per class that has any, (k,) their class indices): the description vector when the
    class has one, else the L2-normalised mean of its examples."""
    class_vectors, mask = support.class_vectors()
    counts = support.example_counts()
    prototypes = support.prototypes().astype(np.float64)
    norms = np.linalg.norm(prototypes, axis=1, keepdims=True)
    vectors = np.where(mask[:, None], class_vectors, prototypes / np.maximum(norms, 1e-12))
    present = np.flatnonzero(mask | (counts > 0))
    return vectors[present].astype(np.float32), present


def generic_level(classifier: Classifier, background: np.ndarray) -> float:
    """``g``: the median top score that a classifier fitted on a support gives (m, d) background vectors."""
    return float(np.median(classifier.scores(np.asarray(background, np.float32)).max(1)))


def zero_shot_threshold(classifier: Classifier, support: Support, background: np.ndarray,
                        lam: float = ZERO_SHOT_LAMBDA) -> tuple[float | None, str]:
    """(threshold on the top classifier score, or None, and why not) from a classifier fitted on ``support`` and
    (m, d) background vectors; see the module docstring."""
    background = np.asarray(background, np.float32)
    if background.ndim != 2 or len(background) == 0 or not np.isfinite(background).all():
        return None, "the background vectors are empty or not finite"
    references, classes = reference_vectors(support)
    if len(classes) < 2:
        return None, "it needs at least two classes (one class has no neighbour to compare with)"
    g = generic_level(classifier, background)
    own = classifier.scores(references).astype(np.float64)
    own[np.arange(len(classes)), classes] = -np.inf
    n = float(own.max(1).mean())
    if not (np.isfinite(g) and np.isfinite(n)):
        return None, "the classifier's scores of the references are not finite"
    return g + lam * (n - g), ""
