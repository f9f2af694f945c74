"""Unknown / out-of-scope rejection: scores, leave-one-out calibration and thresholds (detector), and the
relative Mahalanobis distance (mahalanobis)."""
from __future__ import annotations

from fewshot.openset.detector import (
                                      DEFAULT_OOD_SCORE,
                                      OOD_SCORES,
                                      TARGETS,
                                      OpenSetDetector,
                                      fit_temperature,
                                      loo_scores,
)

__all__ = ["DEFAULT_OOD_SCORE", "OOD_SCORES", "TARGETS", "OpenSetDetector", "fit_temperature", "loo_scores"]
