"""Unknown / out-of-scope rejection: scores, leave-one-out calibration and thresholds (detector), the leave-one-out
scores everything is fitted on (loo), confidences without rejection (confidence), calibration primitives
(calibration), the relative Mahalanobis distance (mahalanobis), and thresholds from generic text for
supports with little or no leave-one-out data (background)."""
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
