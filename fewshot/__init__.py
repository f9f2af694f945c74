"""fewshot: few-shot and zero-shot classification on frozen encoders."""
from __future__ import annotations

__version__ = "0.1.0"

from .encoders import Encoder, list_encoders, load_encoder
from .engine import FewShotEngine, Prediction
from .errors import FewShotError

__all__ = ["Encoder", "FewShotEngine", "FewShotError", "Prediction", "list_encoders", "load_encoder",
           "__version__"]
