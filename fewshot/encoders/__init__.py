"""Frozen encoders: one file per backend, one protocol (``Encoder`` in base.py)."""
from fewshot.encoders.base import Encoder
from fewshot.encoders.registry import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, list_encoders, load_encoder

__all__ = ["Encoder", "load_encoder", "list_encoders", "DEFAULT_TEXT_ENCODER", "DEFAULT_IMAGE_ENCODER"]
