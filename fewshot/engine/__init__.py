"""The facade an application embeds (``FewShotEngine``), its save format and its refine/adapt/open-set lifecycle."""
from __future__ import annotations

from fewshot.engine.engine import FewShotEngine, Prediction

__all__ = ["FewShotEngine", "Prediction"]
