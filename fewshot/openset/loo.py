"""Leave-one-block-out (LOO) scores of support examples: the held-out data that calibration and open-set
rejection are fitted on (``fewshot.openset.confidence``, ``fewshot.openset.detector``).

Support examples are split into blocks; each block is scored by a clone of the classifier fitted on the other
examples, as if its examples were new in-scope inputs (``Classifier.held_out_scores``: one refit per block, or a
closed form for prototypes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fewshot.classifiers import make_classifier
from fewshot.classifiers.base import Classifier, Support
from fewshot.errors import InvalidInputError


@dataclass(frozen=True)
class HeldOut:
    """The LOO data of one support: ``folds`` (``loo_folds``), (m, C) ``scores``, (m,) true classes ``truth`` and
    (m,) indices into ``support.examples()`` ``index``, in fold order."""

    folds: list
    scores: np.ndarray
    truth: np.ndarray
    index: np.ndarray

    @classmethod
    def fit(cls, support: Support, classifier: Classifier | str, classifier_config: dict | None = None,
            max_examples: int = 2000, seed: int = 0, only: np.ndarray | None = None) -> HeldOut:
        """``loo_folds`` of ``support`` (its arguments) scored by ``classifier`` (``scores_on_folds``)."""
        folds = loo_folds(support, max_examples, seed=seed, only=only)
        arrays = scores_on_folds(support, classifier, classifier_config, folds)
        for array in arrays:        # shared by the calibration and the detector: neither may change them
            array.setflags(write=False)
        return cls(folds, *arrays)


def loo_folds(support: Support, max_examples: int = 2000, n_blocks: int = 10, seed: int = 0,
              only: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-block-out folds over ``support.examples()``: [((b,) indices scored, (n,) bool mask fitted on)].

    Only examples whose class keeps another example, or has a prompt vector, are scored (else the class would
    vanish when they are held out); ``only`` — an (n,) bool mask over ``support.examples()`` — restricts the
    scored ones further (e.g. to examples a fine-tuned encoder never trained on). At most ``max_examples`` are
    scored."""
    _, labels = support.examples()
    _, mask = support.class_vectors()
    counts = np.bincount(labels, minlength=support.n_classes)
    keep = (counts[labels] >= 2) | mask[labels]
    if only is not None:
        only = np.asarray(only, bool)
        if only.shape != labels.shape:
            raise InvalidInputError(f"only must be a ({len(labels)},) bool mask, got shape {only.shape}")
        keep &= only
    eligible = np.flatnonzero(keep)
    if len(eligible) == 0:
        return []
    rng = np.random.default_rng(seed)
    if len(eligible) > max_examples:
        eligible = rng.choice(eligible, max_examples, replace=False)
    folds = []
    for block in np.array_split(rng.permutation(eligible), max(1, min(n_blocks, len(eligible)))):
        rest = np.ones(len(labels), bool)
        rest[block] = False
        # a class may lose all its examples in this block while others of it exist: keep one back
        in_block = np.bincount(labels[block], minlength=support.n_classes)
        for c in np.flatnonzero((in_block > 0) & (in_block == counts)):
            if not mask[c]:
                first = block[labels[block] == c][0]
                rest[first] = True
                block = block[block != first]
        if len(block) and rest.any():  # a fold with nothing left to fit on cannot be scored (e.g. by logreg)
            folds.append((block, rest))
    return folds


def loo_scores(support: Support, classifier: Classifier | str, classifier_config: dict | None = None,
               max_examples: int = 2000, n_blocks: int = 10, seed: int = 0,
               only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-block-out scores of support examples: ((m, C) scores, (m,) true class indices).

    Each block of ``loo_folds`` is scored by a clone of ``classifier`` (an instance, or a registered name built
    with ``classifier_config``) fitted on the other examples."""
    folds = loo_folds(support, max_examples, n_blocks, seed, only)
    scores, truth, _ = scores_on_folds(support, classifier, classifier_config, folds)
    return scores, truth


def unfitted(classifier: Classifier | str, config: dict | None) -> Classifier:
    """A fresh classifier for one fold: a live one's ``clone_for_folds()``, or a registered name built from
    ``config``."""
    if isinstance(classifier, Classifier):
        return classifier.clone_for_folds()
    return make_classifier(classifier, **(config or {}))


def scores_on_folds(support: Support, classifier: Classifier | str, classifier_config: dict | None,
                     folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """((m, C) held-out scores, (m,) true classes, (m,) example indices) over ``folds``."""

    if not folds:
        return np.zeros((0, support.n_classes), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    _, labels = support.examples()
    template = classifier if isinstance(classifier, Classifier) else make_classifier(classifier,
                                                                                      **(classifier_config or {}))
    scores = template.held_out_scores(support, folds)   # a clone per fold, or a closed form (prototypes)
    index = np.concatenate([block for block, _ in folds])
    return np.concatenate(scores), labels[index], index
