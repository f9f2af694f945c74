"""Calibrated confidences without rejection: what ``predict(reject=False)`` shows, fitted in milliseconds.

``ScoreCalibration`` scores the support by leave-one-out (``fewshot.openset.loo``) and fits on those scores:

* the Platt map P(label right | its classifier score) — 1-D logistic regression of LOO correctness on the top
  score, applied to every label's score (monotone: it ranks inputs as the raw top score does);
* the softmax temperature of ``predict_proba`` (LOO negative log-likelihood), fitted on first use.

The open-set detector (``fewshot.openset.detector``) reads the same LOO data (``held_out_``) and adds what only
rejection needs (covariances, thresholds): it is fitted when ``reject=True`` is first asked for, so that a change
to the support followed by ``predict(reject=False)`` costs a few milliseconds (prototypes: LOO in closed form).
With ``reject=True`` the score shown is instead the detector's confidence — P(top label right | its rejection
score) — so that acceptance follows the score the user sees.

Small supports (fewer than ``SMALL_SUPPORT_LOO`` LOO examples: ``small``) leave the confidences to the detector,
which blends a threshold from generic text in (``OpenSetDetector._fit_small``); it is cheap to fit there.
"""
from __future__ import annotations

import threading

import numpy as np

from fewshot._core import check_int, softmax
from fewshot._threads import single_threaded_blas
from fewshot.classifiers.base import Classifier, Support
from fewshot.openset.calibration import fit_platt, fit_temperature
from fewshot.openset.detector import SMALL_SUPPORT_LOO
from fewshot.openset.loo import HeldOut


class ScoreCalibration:
    """P(label right | classifier score) and a softmax temperature, fitted on the support's LOO scores."""

    def __init__(self, max_loo_examples: int = 2000, seed: int = 0):
        self.max_loo_examples = check_int("max_loo_examples", max_loo_examples, 1)
        self.seed = check_int("seed", seed, 0)
        self.held_out_: HeldOut | None = None
        self.platt_: tuple[float, float] | None = None   # (slope, intercept) on the top classifier score
        self.default_temperature: float = 20.0
        self._temperature: float | None = None
        self._temperature_lock = threading.Lock()

    def fit(self, support: Support, classifier: Classifier | str = "prototype", default_temperature: float = 20.0,
            calibrate_on: np.ndarray | None = None) -> ScoreCalibration:
        """Score ``support`` by LOO (``calibrate_on``: (n,) bool mask over ``support.examples()``, the examples to
        hold out) and fit the confidence map on the top scores. One BLAS thread: small matrices."""
        with single_threaded_blas():
            held = HeldOut.fit(support, classifier, None, self.max_loo_examples, self.seed, calibrate_on)
        self.held_out_, self.default_temperature, self._temperature = held, float(default_temperature), None
        self.platt_ = fit_platt(held.scores.max(1), held.scores.argmax(1) == held.truth) \
            if len(held.truth) >= SMALL_SUPPORT_LOO else None
        return self

    @property
    def small(self) -> bool:
        """Fewer than ``SMALL_SUPPORT_LOO`` LOO examples: the detector sets the confidences."""
        return self.held_out_ is None or len(self.held_out_.truth) < SMALL_SUPPORT_LOO

    @property
    def temperature_(self) -> float:
        """The logit scale minimising the LOO negative log-likelihood (fitted once, on first use; read without the
        lock once fitted, so that parallel predictions do not queue on it)."""
        if self._temperature is not None:
            return self._temperature
        with self._temperature_lock:
            if self._temperature is None:
                held = self.held_out_
                self._temperature = self.default_temperature if held is None else \
                    fit_temperature(held.scores, held.truth, self.default_temperature)
            return self._temperature

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(n, C) scores → (n, C) probabilities, softmax(T · scores)."""
        return softmax(scores * self.temperature_)

    def confidences(self, scores: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray | None:
        """(n, C) scores → (n, C) P(label right | its score) by the Platt map (``queries`` unused: the map reads
        the scores alone); None when none was fitted (a small support, or LOO outcomes all alike)."""
        if self.platt_ is None:
            return None
        slope, intercept = self.platt_
        return 1.0 / (1.0 + np.exp(-(slope * scores.astype(np.float64) + intercept)))
