"""ONNX export and int8 quantisation of encoders; the runtime that reads the exports is
``fewshot.encoders.onnx``, which owns the manifest definition."""
from __future__ import annotations

from fewshot.export.onnx_export import QUANTIZE_CHOICES, Quantize, export_encoder

__all__ = ["QUANTIZE_CHOICES", "Quantize", "export_encoder"]
