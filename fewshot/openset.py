"""Open-set rejection: decide when an input fits none of the registered classes, with no test data.

Everything is estimated on the support set by leave-one-out (LOO): support examples are split into blocks, each
block is scored by the same classifier fitted on the other examples, as if they were new in-scope inputs.
From those LOO scores:

* a softmax temperature is fitted by minimising the LOO negative log-likelihood (calibrated probabilities);
* an out-of-distribution score is computed per input — ``"max-score"`` (top classifier score: for prototypes,
  the cosine to the nearest prototype), ``"msp"`` (top calibrated probability) or ``"energy"``
  (T·logsumexp(scores/T)) or ``"class-relative"`` (the top score minus how high the predicted class's own
  examples usually score: classes differ in how tight they are, so one cosine threshold is too strict for loose
  classes and too lax for tight ones) — higher = more in-scope;
* a confidence per label, P(the label is right | its score), is fitted by 1-D logistic regression of LOO
  correctness on the LOO top score (Platt scaling; on the class-relative top score when that is the rejection
  score): monotone in the score, so it ranks in-scope above out-of-scope inputs as well as the score itself, and
  is comparable across inputs;
* a threshold is chosen so that a fraction ``keep`` of in-scope inputs is accepted (``target="coverage"``), or so
  that ``keep`` of the correctly classified LOO examples survive (``target="accuracy"``, "keep 95% of in-scope
  accuracy"), or so that in-scope accuracy falls by at most ``1 − keep`` in absolute terms (``target="drop"``:
  at most that share of all LOO examples is both correct and rejected; ``keep=0.98`` → at most 2 points).
  ``per_class=True`` gives each predicted class its own threshold, shrunk toward the global one by ``shrinkage``
  pseudo-examples; with ``"drop"`` that spends the budget unevenly across classes, so the bound then holds only
  for the global threshold. The same ``shrinkage`` shrinks the class-relative offsets toward 0.

An input identical to a support example is always accepted. Trade-off: a larger ``keep`` rejects fewer in-scope
inputs and lets more out-of-scope ones through; thresholds move monotonically with ``keep``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .classifiers.base import ArraySupport, Support, softmax
from .errors import InvalidInputError

OOD_SCORES = ("max-score", "msp", "energy", "class-relative")
TARGETS = ("coverage", "accuracy", "drop")


def loo_scores(support: Support, classifier_name: str, classifier_config: dict | None = None,
               max_examples: int = 2000, n_blocks: int = 10, seed: int = 0,
               only: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-block-out scores of support examples: ((m, C) scores, (m,) true class indices).

    Only examples whose class keeps another example, or has a prompt vector, are scored (else the class would
    vanish when they are held out); ``only`` — an (n,) bool mask over ``support.examples()`` — restricts the
    scored ones further (e.g. to examples a fine-tuned encoder never trained on)."""
    from .classifiers import make_classifier

    vectors, labels = support.examples()
    class_vectors, mask = support.class_vectors()
    counts = np.bincount(labels, minlength=support.n_classes)
    keep = (counts[labels] >= 2) | mask[labels]
    if only is not None:
        only = np.asarray(only, bool)
        if only.shape != labels.shape:
            raise InvalidInputError(f"only must be a ({len(labels)},) bool mask, got shape {only.shape}")
        keep &= only
    eligible = np.flatnonzero(keep)
    if len(eligible) == 0:
        return np.zeros((0, support.n_classes), np.float32), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    if len(eligible) > max_examples:
        eligible = rng.choice(eligible, max_examples, replace=False)
    scores, truth = [], []
    for block in np.array_split(rng.permutation(eligible), max(1, min(n_blocks, len(eligible)))):
        rest = np.ones(len(labels), bool)
        rest[block] = False
        # a class may lose all its examples in this block while others of it exist: keep one back
        lost = np.setdiff1d(labels[block], labels[rest])
        for c in lost:
            if not mask[c]:
                first = block[labels[block] == c][0]
                rest[first] = True
                block = block[block != first]
        if not len(block):
            continue
        fold = ArraySupport(vectors[rest], labels[rest], support.n_classes, class_vectors, mask)
        clf = make_classifier(classifier_name, **(classifier_config or {})).fit(fold)
        scores.append(clf.scores(vectors[block]))
        truth.append(labels[block])
    if not scores:
        return np.zeros((0, support.n_classes), np.float32), np.zeros(0, np.int64)
    return np.concatenate(scores), np.concatenate(truth)


def fit_temperature(scores: np.ndarray, labels: np.ndarray, default: float = 20.0) -> float:
    """Logit scale T minimising the NLL of softmax(T·scores) on (m, C) LOO scores; ``default`` if m < 5."""
    if len(labels) < 5:
        return float(default)
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        z = np.exp(log_t) * scores
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))).mean())

    result = minimize_scalar(nll, bounds=(np.log(1.0), np.log(200.0)), method="bounded")
    return float(np.exp(result.x))


class OpenSetDetector:
    """Calibrated probabilities and an accept / reject decision, fitted on support data only."""

    def __init__(self, score: str = "class-relative", keep: float = 0.95, target: str = "coverage",
                 per_class: bool = False, shrinkage: float = 10.0, max_loo_examples: int = 2000, seed: int = 0):
        if score not in OOD_SCORES:
            raise InvalidInputError(f"score must be one of {OOD_SCORES}, got {score!r}")
        if target not in TARGETS:
            raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
        if not 0.0 < keep <= 1.0:
            raise InvalidInputError(f"keep must be in (0, 1], got {keep}")
        self.score, self.keep, self.target, self.per_class = score, float(keep), target, bool(per_class)
        self.shrinkage, self.max_loo_examples, self.seed = float(shrinkage), int(max_loo_examples), int(seed)
        self.temperature_: float = 20.0
        self.threshold_: float = -np.inf
        self.class_thresholds_: np.ndarray | None = None
        self.platt_: tuple[float, float] | None = None     # (slope, intercept) of the confidence map
        self.class_offsets_: np.ndarray | None = None      # (C,) for "class-relative": typical score − global
        self.support: Support | None = None

    def config(self) -> dict[str, Any]:
        return {"score": self.score, "keep": self.keep, "target": self.target, "per_class": self.per_class,
                "shrinkage": self.shrinkage, "max_loo_examples": self.max_loo_examples, "seed": self.seed}

    def fit(self, support: Support, classifier_name: str = "prototype",
            classifier_config: dict | None = None, default_temperature: float = 20.0,
            calibrate_on: np.ndarray | None = None) -> "OpenSetDetector":
        """Fit temperature and thresholds from LOO scores of the support set (no rejection if too few).
        ``calibrate_on``: (n,) bool mask over ``support.examples()``, the examples to score (default all)."""
        self.support = support
        scores, truth = loo_scores(support, classifier_name, classifier_config, self.max_loo_examples,
                                   seed=self.seed, only=calibrate_on)
        self.temperature_ = fit_temperature(scores, truth, default_temperature)
        self.threshold_, self.class_thresholds_, self.platt_, self.class_offsets_ = -np.inf, None, None, None
        if len(truth) < 5:
            return self
        predicted = scores.argmax(1)
        # confidence from the score that rejection uses, so the two rank inputs alike (msp/energy: the top score)
        if self.score == "class-relative":
            self.class_offsets_, ood = class_offsets(scores.max(1), predicted, truth, support.n_classes,
                                                     self.shrinkage)
            confidence_scores = ood
        else:
            ood, confidence_scores = self.ood_scores(scores), scores.max(1)
        self.platt_ = fit_platt(confidence_scores, predicted == truth)
        pool = ood if self.target == "coverage" else ood[predicted == truth]
        if len(pool) == 0:
            return self
        # share of the pool to reject: for "drop" the allowed absolute loss, over the correct share of all
        if self.target == "drop":  # reject at most floor((1 - keep)·n) correct examples: the lower order statistic
            allowed = int(np.floor((1.0 - self.keep) * len(truth) + 1e-9))
            reject = min(1.0, allowed / len(pool))
            self.threshold_ = float(np.sort(pool)[allowed]) if allowed < len(pool) else float(pool.max()) + 1e-6
        else:
            reject = 1.0 - self.keep
            self.threshold_ = float(np.quantile(pool, reject))
        if self.per_class:
            chosen = predicted if self.target == "coverage" else predicted[predicted == truth]
            thresholds = np.full(support.n_classes, self.threshold_)
            for c in np.unique(chosen):
                own = pool[chosen == c]
                local = float(np.quantile(own, reject))
                thresholds[c] = (len(own) * local + self.shrinkage * self.threshold_) / (len(own) + self.shrinkage)
            self.class_thresholds_ = thresholds
        return self

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(n, C) scores → (n, C) calibrated probabilities."""
        return softmax(scores * self.temperature_)

    def confidences(self, scores: np.ndarray) -> np.ndarray | None:
        """(n, C) scores → (n, C) P(label is right | score) by the fitted Platt map; None if not fitted."""
        if self.platt_ is None:
            return None
        slope, intercept = self.platt_
        x = scores.astype(np.float64)
        if self.score == "class-relative" and self.class_offsets_ is not None:
            x = x - self.class_offsets_[None, :]
        return 1.0 / (1.0 + np.exp(-(slope * x + intercept)))

    def ood_scores(self, scores: np.ndarray) -> np.ndarray:
        """(n, C) scores → (n,) in-scope-ness (higher = more likely one of the classes)."""
        if self.score == "max-score":
            return scores.max(1)
        if self.score == "class-relative":
            offsets = self.class_offsets_ if self.class_offsets_ is not None else np.zeros(scores.shape[1])
            return scores.max(1) - offsets[scores.argmax(1)]
        if self.score == "msp":
            return self.probabilities(scores).max(1)
        z = scores * self.temperature_
        top = z.max(1)
        return (top + np.log(np.exp(z - top[:, None]).sum(1))) / self.temperature_

    def accept(self, scores: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """(n, C) scores (and optionally the (n, d) queries) → (n,) bool: True = in-scope."""
        ood = self.ood_scores(scores)
        threshold = self.class_thresholds_[scores.argmax(1)] if self.class_thresholds_ is not None \
            else self.threshold_
        accepted = ood >= threshold
        if queries is not None and self.support is not None and len(queries) and not accepted.all():
            sims, _ = self.support.search(queries[~accepted], 1)
            exact = np.zeros(len(queries), bool)
            exact[~accepted] = sims[:, 0] >= 1.0 - 1e-4   # an input equal to a support example
            accepted |= exact
        return accepted


def class_offsets(top: np.ndarray, predicted: np.ndarray, truth: np.ndarray, n_classes: int,
                  shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-class score offsets for the ``"class-relative"`` score, from (m,) LOO top scores, predictions, truth.

    offset_c = mean_c − mean: ``mean_c`` is the mean top score of the LOO examples correctly classified as c,
    shrunk toward the global ``mean`` of all correct ones with ``shrinkage`` pseudo-examples (a class with no
    correct LOO example gets offset 0). Returns ((C,) offsets, (m,) LOO class-relative scores), where each correct
    example's own class offset is computed without it — so thresholds chosen on these scores are not
    optimistic about the example's own class."""
    correct = predicted == truth
    if not correct.any():
        return np.zeros(n_classes), top.astype(np.float64)
    top = top.astype(np.float64)
    mean = float(top[correct].mean())
    counts = np.bincount(predicted[correct], minlength=n_classes).astype(np.float64)
    sums = np.bincount(predicted[correct], weights=top[correct], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        offsets = np.where(counts + shrinkage > 0, (sums + shrinkage * mean) / (counts + shrinkage), mean) - mean
        own_counts = counts[predicted] - correct
        own_sums = sums[predicted] - np.where(correct, top, 0.0)
        own = np.where(own_counts + shrinkage > 0, (own_sums + shrinkage * mean) / (own_counts + shrinkage), mean)
    return offsets, top - (own - mean)


def fit_platt(top_scores: np.ndarray, correct: np.ndarray) -> tuple[float, float] | None:
    """1-D logistic regression correct ~ sigmoid(slope · score + intercept); None when the LOO outcomes are all
    the same (nothing to fit) or the fitted slope is not positive (the map must increase with the score)."""
    correct = np.asarray(correct, bool)
    if len(correct) < 5 or correct.all() or not correct.any():
        return None
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=10.0).fit(np.asarray(top_scores, np.float64)[:, None], correct)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    return (slope, intercept) if slope > 0 else None
