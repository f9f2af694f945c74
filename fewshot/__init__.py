"""fewshot: few-shot and zero-shot classification on frozen encoders."""
from __future__ import annotations

from fewshot._core import __version__
from fewshot.encoders import Encoder, list_encoders, load_encoder
from fewshot.engine.engine import BatchPrediction, FewShotEngine, Prediction
from fewshot.errors import FewShotError
from fewshot.training import encoder_refine as _encoder_refine  # noqa: F401 - registers refine("encoder")

__all__ = ["BatchPrediction", "Encoder", "FewShotEngine", "FewShotError", "Prediction", "list_encoders", "load_encoder",
           "__version__"]
