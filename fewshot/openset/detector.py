"""Open-set rejection: decide when an input fits none of the registered classes, with no test data.

Everything is estimated on the support set by leave-one-out (LOO, ``fewshot.openset.loo``; the engine hands the
detector the scores its calibration already computed, ``fit(..., held_out=...)``): support examples are split
into blocks, each block is scored by the same classifier fitted on the other examples, as if they were new
in-scope inputs (for
"min-z" the covariances are refitted without each block too; for the other Mahalanobis scores the Mahalanobis
part is left out one example at a time, in closed form: ``fewshot.openset.mahalanobis``).
From those LOO scores:

* a softmax temperature is fitted by minimising the LOO negative log-likelihood (calibrated probabilities);
* an out-of-distribution score is computed per input — higher = more in-scope:

  - ``"min-z"`` (the default): the minimum of three z-scores, each standardised by its mean and spread over the
    correctly classified LOO examples — the raw top classifier score (for prototypes, the cosine to the nearest
    prototype), the relative Mahalanobis score d²_0 − min_c d²_c and the plain one −min_c d²_c
    (``fewshot.openset.mahalanobis``: a covariance shared by the classes, Ledoit-Wolf shrinkage; d²_0 is the
    distance to the whole support). An input that any of the three calls far off is rejected: the relative part
    helps against unknowns close to the classes, but alone it loses inputs far from everything (it subtracts
    exactly the distance that says so), which the raw score and the plain distance catch. Chosen over 15
    open-set splits, leave-one-data-set-out (``benchmarks/openset_carryover.py``);
  - ``"max-score"`` (the top classifier score), ``"msp"`` (top calibrated probability), ``"energy"``
    (T·logsumexp(scores/T));
  - ``"class-relative"`` (the top score minus how high the predicted class's own examples usually score);
  - ``"mahalanobis"`` (relative Mahalanobis distance to the predicted class);
  - ``"class-relative+mahalanobis"`` (the class-relative score plus the relative Mahalanobis score to the nearest
    class, each divided by its LOO spread: the better choice for unknowns close to the classes on large
    supports, but it loses far-off inputs on small ones).

  The Mahalanobis scores need the query vectors (``accept(scores, queries)``) and at least 10 examples beyond one
  per class; with fewer, ``"min-z"`` falls back to ``"max-score"`` and the others to ``"class-relative"``. A label
  whose class has only a description gets the typical (LOO mean) Mahalanobis part: a covariance says nothing
  about it;
* a confidence per label, P(the label is right | its score), is fitted by 1-D logistic regression of LOO
  correctness on the LOO rejection score (Platt scaling; on the top classifier score for "msp" and "energy"):
  monotone in the score, so it ranks in-scope above out-of-scope inputs as well as the score itself, and is
  comparable across inputs;
* a threshold is chosen so that a fraction ``keep`` of in-scope inputs is accepted (``target="coverage"``, the
  default, with ``keep=0.97``: it holds on held-out queries on average), or so that ``keep`` of the correctly
  classified LOO examples survive (``target="accuracy"``), or so that in-scope accuracy falls by at most
  ``1 − keep`` in absolute terms (``target="drop"``): few LOO examples make that share noisy, so the number of
  correct LOO examples it may reject is the largest k whose one-sided 90% Clopper-Pearson upper bound on k / n
  stays ≤ 1 − keep (none, with fewer than about 115 LOO examples at ``keep=0.98``: the threshold is then the
  lowest correct LOO score). Still not a guarantee on new queries: LOO accuracy is optimistic for them
  (the benchmark reports requested against achieved drop). ``per_class=True`` gives each predicted class its own
  threshold, shrunk toward the global one by ``shrinkage`` pseudo-examples; with ``"drop"`` that spends the budget
  unevenly across classes, so the bound then holds only for the global threshold. The same ``shrinkage`` shrinks
  the class-relative offsets toward 0.

Small supports (fewer than ``SMALL_SUPPORT_LOO`` = 50 LOO examples: a few examples per class, some classes only
described) given ``fit(..., background=...)`` — embedded generic sentences, ``generic_sentences()``: rejection
reads the top classifier score, at a threshold (m·t_LOO + p·t_0) / (m + p): t_LOO the LOO threshold above from
the m LOO examples, t_0 the zero-shot one from how generic text and neighbouring classes score
(``fewshot.openset.background``), worth p = ``SMALL_SUPPORT_PRIOR`` examples. A few LOO scores come from the
best-supported classes only (a class with one example cannot be held out), so alone they set the threshold too
high for the others; with none (a zero-shot engine) t_0 alone. From 5 LOO examples the confidence map is fitted on
the same top score (on every (example, label) pair when every LOO example is right), so the confidence shown
orders inputs as rejection does; with fewer, confidences are sigmoid(s·(score − threshold)): 0.5 at the threshold,
``ZERO_SHOT_GENERIC_CONFIDENCE`` at the typical generic sentence — not a probability, but what is shown then orders
inputs as rejection does. The configured ``score`` and ``per_class`` do not apply on this path (too few examples
for a covariance or per-class thresholds). Without background and with fewer than 5 LOO examples rejection is
impossible and ``accept`` / ``assess(reject=True)`` warn ``UncalibratedRejectionWarning`` instead of silently
accepting everything.

An input identical to a support example is always accepted. Trade-off: a larger ``keep`` rejects fewer in-scope
inputs and lets more out-of-scope ones through; thresholds move monotonically with ``keep``.
"""
from __future__ import annotations

import warnings
from typing import Any, Literal, get_args

import numpy as np

from fewshot._core import check_float, check_int, softmax
from fewshot._threads import single_threaded_blas
from fewshot.classifiers.base import Classifier, Support
from fewshot.errors import InvalidInputError, UncalibratedRejectionWarning
from fewshot.openset.background import Background, generic_level, zero_shot_threshold
from fewshot.openset.calibration import (
    _spread,
    allowed_rejections,
    class_offsets,
    fit_platt,
    fit_platt_per_label,
    fit_temperature,
)
from fewshot.openset.loo import HeldOut, loo_folds, loo_scores, scores_on_folds, unfitted  # noqa: F401 - re-exported
from fewshot.openset.mahalanobis import RelativeMahalanobis, fit_rows, fold_grams

OODScore = Literal["max-score", "msp", "energy", "class-relative", "mahalanobis", "class-relative+mahalanobis",
                   "min-z"]
OOD_SCORES: tuple[str, ...] = get_args(OODScore)
NEEDS_QUERIES = ("mahalanobis", "class-relative+mahalanobis", "min-z")   # computed from the query vectors too
DEFAULT_OOD_SCORE: OODScore = "min-z"
DEFAULT_KEEP = 0.97
ZERO_SHOT_GENERIC_CONFIDENCE = 0.1  # with no confidence map: what the typical generic sentence's top score shows
MIN_LOO = 5                 # LOO examples needed to calibrate from examples alone
SMALL_SUPPORT_LOO = 50      # below this many LOO examples (and with background text) the threshold is a weighted mean
SMALL_SUPPORT_PRIOR = 5     # ... of the LOO one and the zero-shot one, which counts as this many LOO examples
                            # (chosen leave-one-data-set-out on small apps: benchmarks/openset_small.py)
RejectTarget = Literal["coverage", "accuracy", "drop"]
TARGETS: tuple[str, ...] = get_args(RejectTarget)


class OpenSetDetector:
    """Calibrated probabilities and an accept / reject decision, fitted on support data only."""

    def __init__(self, score: OODScore = DEFAULT_OOD_SCORE, keep: float = DEFAULT_KEEP,
                 target: RejectTarget = "coverage",
                 per_class: bool = False, shrinkage: float = 10.0, max_loo_examples: int = 2000, seed: int = 0):
        if score not in OOD_SCORES:
            raise InvalidInputError(f"score must be one of {OOD_SCORES}, got {score!r}")
        if target not in TARGETS:
            raise InvalidInputError(f"target must be one of {TARGETS}, got {target!r}")
        if not check_float("keep", keep, 0.0) <= 1.0:
            raise InvalidInputError(f"keep must be in (0, 1], got {keep}")
        if not isinstance(per_class, (bool, np.bool_)):
            raise InvalidInputError(f"per_class must be True or False, got {per_class!r}")
        self.score, self.keep, self.target, self.per_class = score, float(keep), target, bool(per_class)
        self.shrinkage = check_float("shrinkage", shrinkage, 0.0, inclusive=True)
        self.max_loo_examples = check_int("max_loo_examples", max_loo_examples, 1)
        self.seed = check_int("seed", seed, 0)
        self.temperature_: float = 20.0
        self.threshold_: float = -np.inf
        self.class_thresholds_: np.ndarray | None = None
        self.platt_: tuple[float, float] | None = None     # (slope, intercept) of the confidence map
        self.class_offsets_: np.ndarray | None = None      # (C,) for "class-relative": typical score − global
        self.mahalanobis_: RelativeMahalanobis | None = None  # for the Mahalanobis scores, when it can be fitted
        self.scales_: tuple[float, float] = (1.0, 1.0)      # LOO spreads of the class-relative / Mahalanobis parts
        self.typical_mahalanobis_: float = 0.0              # its mean over correct LOO examples: the Mahalanobis
                                                            # part for labels of classes that have no example
        self.z_params_: tuple[tuple[float, float], ...] | None = None  # "min-z": LOO (mean, spread) of each part
        self.effective_score_: str = score                  # the fallback when a Mahalanobis score can't fit
        self.threshold_source_: str = "none"                # "loo", "loo+zero-shot" (small supports), "zero-shot"
                                                            # (background alone) or "none"
        self.uncalibrated_: str | None = None               # why rejection is impossible (warned on use)
        self.zero_shot_scale_: float | None = None          # no confidence map, a background threshold: the slope
                                                            # of the confidences sigmoid(s · (score − threshold))
        self.loo_ood_: np.ndarray | None = None             # (m,) LOO rejection scores the threshold was chosen on
        self.loo_correct_: np.ndarray | None = None         # (m,) whether each LOO example was classified right
        self.support: Support | None = None

    def config(self) -> dict[str, Any]:
        return {"score": self.score, "keep": self.keep, "target": self.target, "per_class": self.per_class,
                "shrinkage": self.shrinkage, "max_loo_examples": self.max_loo_examples, "seed": self.seed}

    def fit(self, support: Support, classifier: Classifier | str = "prototype",
            classifier_config: dict | None = None, default_temperature: float = 20.0,
            calibrate_on: np.ndarray | None = None, background: Background = None,
            held_out: HeldOut | None = None) -> OpenSetDetector:
        """Fit temperature and thresholds from LOO scores of the support set. ``calibrate_on``: (n,) bool mask over
        ``support.examples()``, the examples to score (default all). ``background``: (m, d) vectors of generic text
        (``generic_sentences()`` embedded like queries), or a callable returning them (called only when needed):
        the threshold when there are fewer than 5 LOO examples; without it there is then no rejection, and
        ``accept`` warns. ``held_out``: the LOO data already computed for this support, classifier, mask and the
        detector's ``max_loo_examples`` / ``seed`` (e.g. by ``ScoreCalibration``), so it is not scored twice. Runs
        with one BLAS thread (``fewshot._threads``): small matrices, busy machines."""
        with single_threaded_blas():
            return self._fit(support, classifier, classifier_config, default_temperature, calibrate_on, background,
                             held_out)

    def _fit(self, support: Support, classifier: Classifier | str, classifier_config: dict | None,
             default_temperature: float, calibrate_on: np.ndarray | None, background: Background,
             held_out: HeldOut | None) -> OpenSetDetector:
        self.support = support
        if held_out is None:
            held_out = HeldOut.fit(support, classifier, classifier_config, self.max_loo_examples, self.seed,
                                   calibrate_on)
        folds, scores, truth, index = held_out.folds, held_out.scores, held_out.truth, held_out.index
        self.temperature_ = fit_temperature(scores, truth, default_temperature)
        self.threshold_, self.class_thresholds_, self.platt_, self.class_offsets_ = -np.inf, None, None, None
        self.mahalanobis_, self.scales_, self.typical_mahalanobis_ = None, (1.0, 1.0), 0.0
        self.z_params_, self.threshold_source_, self.uncalibrated_ = None, "none", None
        self.loo_ood_, self.loo_correct_, self.zero_shot_scale_ = None, None, None
        vectors, labels = support.examples()
        if len(truth) < SMALL_SUPPORT_LOO and background is not None and self._fit_small(
                support, classifier, classifier_config, scores, truth, background):
            return self
        rows = fit_rows(labels, self.seed)      # None, or a class-stratified subset of a large support
        fitted = np.ones(len(labels), bool) if rows is None else rows
        if self.score in NEEDS_QUERIES and RelativeMahalanobis.can_fit(labels[fitted], support.n_classes):
            self.mahalanobis_ = RelativeMahalanobis().fit(vectors[fitted], labels[fitted], support.n_classes)
        # a Mahalanobis score with too few examples for a covariance: "min-z" rejects by the raw top score (the
        # part that never loses far-off inputs), the others by the class-relative score
        self.effective_score_ = self.score
        if self.score in NEEDS_QUERIES and self.mahalanobis_ is None:
            self.effective_score_ = "max-score" if self.score == "min-z" else "class-relative"
        if len(truth) < MIN_LOO:
            self._fit_without_loo(background)
            return self
        self.threshold_source_ = "loo"
        predicted = scores.argmax(1)
        correct = predicted == truth
        score = self.effective_score_
        if score in ("class-relative", "class-relative+mahalanobis"):
            self.class_offsets_, relative = class_offsets(scores.max(1), predicted, truth, support.n_classes,
                                                          self.shrinkage)
        if score == "min-z":
            ood = self._fit_min_z(scores, predicted, correct, support, folds, None if rows is None else rows[index])
        elif score in NEEDS_QUERIES:
            # (m, C) LOO class scores: in closed form for examples in the fit; outside it (a large support) new
            assert self.mahalanobis_ is not None and self.mahalanobis_.counts is not None
            class_parts = self.mahalanobis_.class_scores(vectors[index])
            inside = fitted[index]
            class_parts[inside] = self.mahalanobis_.leave_one_out_scores(vectors[index[inside]],
                                                                         labels[index[inside]])
            part = class_parts[np.arange(len(index)), predicted] if score == "mahalanobis" else class_parts.max(1)
            self.typical_mahalanobis_ = float(part[correct].mean()) if correct.any() else 0.0
            part = np.where(self.mahalanobis_.counts[predicted] > 0, part, self.typical_mahalanobis_)
            if score == "mahalanobis":
                ood = part
            else:   # each part divided by its spread over the correctly classified LOO examples
                self.scales_ = (_spread(relative[correct]), _spread(part[correct]))
                ood = relative / self.scales_[0] + part / self.scales_[1]
        elif score == "class-relative":
            ood = relative
        else:
            ood = self.ood_scores(scores)
        # confidence from the score that rejection uses, so the two rank inputs alike (msp/energy: the top score)
        confidence_scores = scores.max(1) if score in ("msp", "energy") else ood
        self.platt_ = fit_platt(confidence_scores, correct)
        self.loo_ood_, self.loo_correct_ = np.asarray(ood, np.float64), correct
        pool = ood if self.target == "coverage" else ood[correct]
        if len(pool) == 0:
            return self
        self.threshold_, reject = self._loo_threshold(pool, len(truth))
        if self.per_class:
            chosen = predicted if self.target == "coverage" else predicted[correct]
            thresholds = np.full(support.n_classes, self.threshold_)
            for c in np.unique(chosen):
                own = pool[chosen == c]
                local = float(np.quantile(own, reject))
                thresholds[c] = (len(own) * local + self.shrinkage * self.threshold_) / (len(own) + self.shrinkage)
            self.class_thresholds_ = thresholds
        return self

    def _loo_threshold(self, pool: np.ndarray, n_loo: int) -> tuple[float, float]:
        """(threshold, share of the pool it rejects) from the (p,) LOO rejection scores of the pool (all LOO
        examples for "coverage", the correct ones otherwise; p >= 1) of ``n_loo`` LOO examples."""
        # share of the pool to reject: for "drop" the allowed absolute loss, over the correct share of all
        if self.target == "drop":  # reject at most k correct examples, k bounded with confidence: the order stat.
            allowed = allowed_rejections(n_loo, 1.0 - self.keep)
            threshold = float(np.sort(pool)[allowed]) if allowed < len(pool) else float(pool.max()) + 1e-6
            return threshold, min(1.0, allowed / len(pool))
        return float(np.quantile(pool, 1.0 - self.keep)), 1.0 - self.keep

    def _fit_small(self, support: Support, classifier: Classifier | str, classifier_config: dict | None,
                   scores: np.ndarray, truth: np.ndarray, background: Background) -> bool:
        """A small support (fewer than ``SMALL_SUPPORT_LOO`` LOO examples: (m, C) ``scores``, (m,) ``truth``) with
        background text: reject by the top classifier score, at a threshold that weighs the LOO one (m examples)
        against the zero-shot one from the background (``SMALL_SUPPORT_PRIOR`` examples' worth). False (nothing
        set) when the background or the zero-shot threshold is not available."""
        vectors = background() if callable(background) else background
        if vectors is None:
            return False
        fitted = unfitted(classifier, classifier_config).fit(support)
        prior, _ = zero_shot_threshold(fitted, support, vectors)
        if prior is None:
            return False
        self.effective_score_, m = "max-score", len(truth)
        top, correct = scores.max(1).astype(np.float64), scores.argmax(1) == truth
        pool = top if self.target == "coverage" else top[correct]
        if len(pool) == 0:
            self.threshold_, self.threshold_source_ = prior, "zero-shot"
            self._set_zero_shot_scale(fitted, vectors)
            return True
        loo, _ = self._loo_threshold(pool, m)
        self.threshold_ = (m * loo + SMALL_SUPPORT_PRIOR * prior) / (m + SMALL_SUPPORT_PRIOR)
        self.threshold_source_ = "loo+zero-shot"
        self.loo_ood_, self.loo_correct_ = top, correct
        if m >= MIN_LOO:
            self.platt_ = fit_platt(top, correct) or fit_platt_per_label(scores, truth)
        if self.platt_ is None:
            self._set_zero_shot_scale(fitted, vectors)
        return True

    def _set_zero_shot_scale(self, fitted: Classifier, background: np.ndarray) -> None:
        """No confidence map (fewer than 5 LOO examples, or none fits): confidences become
        sigmoid(s · (score − threshold)), 0.5 at the threshold and ``ZERO_SHOT_GENERIC_CONFIDENCE`` at the typical
        generic sentence's top score, so what is shown orders inputs as rejection does (not a probability:
        ``score_meaning`` says so)."""
        gap = self.threshold_ - generic_level(fitted, background)
        if np.isfinite(gap) and gap > 1e-6:
            self.zero_shot_scale_ = float(np.log((1 - ZERO_SHOT_GENERIC_CONFIDENCE) / ZERO_SHOT_GENERIC_CONFIDENCE)
                                          / gap)

    def _fit_min_z(self, scores: np.ndarray, predicted: np.ndarray, correct: np.ndarray, support: Support,
                   folds: list[tuple[np.ndarray, np.ndarray]], inside: np.ndarray | None) -> np.ndarray:
        """"min-z" from the (m, C) LOO classifier scores of the ``folds`` blocks: store the (mean, spread) of each
        part over the correct ones and return the (m,) LOO scores. The Mahalanobis parts of a block come from a
        refit without it (Ledoit-Wolf shrinkage re-estimated, as for a new input: the closed form, which holds the
        shrinkage fixed, makes held-out examples look closer than new inputs when there are fewer examples than
        dimensions). A support too large for one fit (``inside``: (m,) whether each LOO example is in the
        covariance fit) leaves the fit's own examples out in closed form and scores the others as new."""
        maha = self.mahalanobis_
        assert maha is not None and maha.counts is not None
        vectors, labels = support.examples()
        index = np.concatenate([block for block, _ in folds])
        if inside is not None:
            background, d2 = maha.background_distances(vectors[index]), maha.class_distances(vectors[index])
            if inside.any():
                background[inside], d2[inside] = maha.leave_one_out_parts(vectors[index[inside]],
                                                                          labels[index[inside]])
        else:
            parts_of = []
            refittable = [RelativeMahalanobis.can_fit(labels[rest], support.n_classes) for _, rest in folds]
            grams = iter(fold_grams(vectors, [rest for (_, rest), ok in zip(folds, refittable) if ok]))
            for (block, rest), ok in zip(folds, refittable):
                if ok:
                    model = RelativeMahalanobis().fit(vectors[rest], labels[rest], support.n_classes,
                                                      gram=next(grams))
                    parts_of.append((model.background_distances(vectors[block]), model.class_distances(vectors[block])))
                else:                                          # too few examples left to refit: the closed form
                    parts_of.append(maha.leave_one_out_parts(vectors[block], labels[block]))
            background = np.concatenate([b for b, _ in parts_of])
            d2 = np.concatenate([d for _, d in parts_of])
        nearest = d2.min(1)
        parts = [scores.max(1).astype(np.float64), background - nearest, -nearest]
        params = []
        for part in parts:
            ok = correct & np.isfinite(part)
            params.append((float(part[ok].mean()) if ok.any() else 0.0, _spread(part[ok])))
        self.z_params_ = tuple(params)
        z_top, z_maha = self._min_z_parts(parts[0], parts[1], parts[2])
        return np.where(maha.counts[predicted] > 0, np.minimum(z_top, z_maha), np.minimum(z_top, 0.0))

    def _min_z_parts(self, top: np.ndarray, relative: np.ndarray, plain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The z of the top score (any shape) and the smaller z of the two Mahalanobis parts ((n,) arrays)."""
        assert self.z_params_ is not None
        (m1, s1), (m2, s2), (m3, s3) = self.z_params_
        return (top - m1) / s1, np.minimum((relative - m2) / s2, (plain - m3) / s3)

    def _fit_without_loo(self, background: Background) -> None:
        """Fewer than 5 LOO examples and no zero-shot threshold (``_fit_small`` could not set one): no rejection,
        and the reason, warned when rejection is asked for."""
        why = "there are fewer than 5 examples that can be held out (classes with only a description, or one " \
              "example each), so no threshold can be calibrated from examples"
        if background is None:
            self.uncalibrated_ = f"rejection is not calibrated and rejects nothing: {why}, and no background " \
                                 "text was given (OpenSetDetector.fit(..., background=...)); add examples"
        else:
            self.uncalibrated_ = f"rejection is not calibrated and rejects nothing: {why}, and no zero-shot " \
                                 "threshold can be computed from the background text (it needs two classes or " \
                                 "more, finite vectors, and an encoder that embeds text); add examples"

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(n, C) scores → (n, C) calibrated probabilities."""
        return softmax(scores * self.temperature_)

    def confidences(self, scores: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray | None:
        """(n, C) scores (and the (n, d) queries, needed by the Mahalanobis scores) → (n, C) P(label is right |
        score) by the fitted Platt map; with no map but a background threshold, sigmoid(s · (score − threshold)) (not a
        probability: 0.5 at the threshold); None if neither is fitted."""
        return self._confidence(self._label_scores(scores, queries))

    def assess(self, scores: np.ndarray, queries: np.ndarray | None = None,
               reject: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """``confidences`` and ``accept`` (all True unless ``reject``) together: ((n, C) or None, (n,) bool),
        computing the per-label scores (for the Mahalanobis scores, from the queries) once."""
        x = self._label_scores(scores, queries)
        confidence = self._confidence(x)
        accepted = self._accept(self._ood_from(x, scores), scores, queries) if reject \
            else np.ones(len(scores), bool)
        return confidence, accepted

    def _confidence(self, x: np.ndarray) -> np.ndarray | None:
        """(n, C) per-label scores → (n, C) confidences: the Platt map, else (a background threshold, too few LOO
        examples) sigmoid(s · (x − threshold)); None when neither is fitted."""
        if self.platt_ is not None:
            return self._platt(x)
        if self.zero_shot_scale_ is not None:
            return 1.0 / (1.0 + np.exp(-self.zero_shot_scale_ * (x - self.threshold_)))
        return None

    def _platt(self, x: np.ndarray) -> np.ndarray:
        """(n, C) per-label scores → (n, C) confidences by the fitted Platt map."""
        assert self.platt_ is not None
        slope, intercept = self.platt_
        return 1.0 / (1.0 + np.exp(-(slope * x + intercept)))

    def _label_scores(self, scores: np.ndarray, queries: np.ndarray | None) -> np.ndarray:
        """(n, C) classifier scores → (n, C) per-label scores: the confidence map reads them, and the rejection
        score is their value at the top label (except for "msp" and "energy"). Labels of classes without examples
        get the typical Mahalanobis part: a covariance says nothing about them."""
        x = scores.astype(np.float64)
        score = self.effective_score_
        if score == "min-z":
            maha = self.mahalanobis_
            assert maha is not None and maha.counts is not None
            if queries is None:
                raise InvalidInputError(f"the {self.score!r} rejection score needs the query vectors: pass queries")
            d2 = maha.class_distances(queries)
            nearest = d2.min(1)
            z_top, z_maha = self._min_z_parts(x, maha.background_distances(queries) - nearest, -nearest)
            return np.where(maha.counts[None, :] > 0, np.minimum(z_top, z_maha[:, None]), np.minimum(z_top, 0.0))
        if score == "mahalanobis":
            assert self.mahalanobis_ is not None and self.mahalanobis_.counts is not None
            return np.where(self.mahalanobis_.counts[None, :] > 0, self._mahalanobis(queries, per_class=True),
                            self.typical_mahalanobis_)
        if score in ("class-relative", "class-relative+mahalanobis") and self.class_offsets_ is not None:
            x = x - self.class_offsets_[None, :]
            if score == "class-relative+mahalanobis":
                assert self.mahalanobis_ is not None and self.mahalanobis_.counts is not None
                part = np.where(self.mahalanobis_.counts[None, :] > 0, self._mahalanobis(queries)[:, None],
                                self.typical_mahalanobis_)
                x = x / self.scales_[0] + part / self.scales_[1]
        return x

    def _mahalanobis(self, queries: np.ndarray | None, per_class: bool = False) -> np.ndarray:
        """(n, d) queries → (n,) relative Mahalanobis scores, or (n, C) per class; a typed error when the queries
        are missing."""
        if queries is None:
            raise InvalidInputError(f"the {self.score!r} rejection score needs the query vectors: pass queries")
        assert self.mahalanobis_ is not None
        return self.mahalanobis_.class_scores(queries) if per_class else self.mahalanobis_.scores(queries)

    def ood_scores(self, scores: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """(n, C) scores (and the (n, d) queries, needed by the Mahalanobis scores) → (n,) in-scope-ness (higher =
        more likely one of the classes)."""
        if self.effective_score_ in ("max-score", "msp", "energy"):
            return self._ood_from(None, scores)
        return self._ood_from(self._label_scores(scores, queries), scores)

    def _ood_from(self, label_scores: np.ndarray | None, scores: np.ndarray) -> np.ndarray:
        """(n,) in-scope-ness from the (n, C) per-label scores (read at the top label) or, for "max-score", "msp"
        and "energy", from the (n, C) classifier scores alone."""
        if self.effective_score_ == "max-score":
            return scores.max(1)
        if self.effective_score_ == "msp":
            return self.probabilities(scores).max(1)
        if self.effective_score_ == "energy":
            z = scores * self.temperature_
            top = z.max(1)
            return (top + np.log(np.exp(z - top[:, None]).sum(1))) / self.temperature_
        assert label_scores is not None
        return label_scores[np.arange(len(scores)), scores.argmax(1)]

    def accept(self, scores: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """(n, C) scores (and the (n, d) queries: needed by the Mahalanobis scores, and to always accept inputs
        equal to a support example) → (n,) bool: True = in-scope."""
        return self._accept(self.ood_scores(scores, queries), scores, queries)

    def _accept(self, ood: np.ndarray, scores: np.ndarray, queries: np.ndarray | None) -> np.ndarray:
        """(n,) in-scope-ness against the threshold(s); inputs equal to a support example are always accepted."""
        if self.uncalibrated_ is not None:
            warnings.warn(self.uncalibrated_, UncalibratedRejectionWarning, stacklevel=3)
        threshold = self.class_thresholds_[scores.argmax(1)] if self.class_thresholds_ is not None \
            else self.threshold_
        accepted = ood >= threshold
        if queries is not None and self.support is not None and len(queries) and not accepted.all():
            sims, _ = self.support.search(queries[~accepted], 1)
            exact = np.zeros(len(queries), bool)
            exact[~accepted] = sims[:, 0] >= 1.0 - 1e-4   # an input equal to a support example
            accepted |= exact
        return accepted
