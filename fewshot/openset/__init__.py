"""Unknown / out-of-scope rejection: scores, leave-one-out calibration and thresholds (detector), the relative
Mahalanobis distance (mahalanobis), and thresholds without leave-one-out data from generic text (background)."""
from __future__ import annotations

from fewshot.openset.background import generic_sentences
from fewshot.openset.detector import (
                                      DEFAULT_KEEP,
                                      DEFAULT_OOD_SCORE,
                                      OOD_SCORES,
                                      TARGETS,
                                      OpenSetDetector,
                                      fit_temperature,
                                      loo_scores,
)

__all__ = ["DEFAULT_KEEP", "DEFAULT_OOD_SCORE", "OOD_SCORES", "TARGETS", "OpenSetDetector", "fit_temperature",
           "generic_sentences", "loo_scores"]
