"""ONNX export and int8 quantisation of encoders; the runtime that reads the exports is
``fewshot.encoders.onnx``, which owns the manifest definition. ``quantize="int8"`` is the row-wise,
batch-independent scheme of ``fewshot.export.int8`` (manifest ``quantize_scheme: "rowwise-int8-v1"``)."""
from __future__ import annotations

from fewshot.export.int8 import SCHEME as QUANTIZE_SCHEME
from fewshot.export.int8 import quantize_rowwise
from fewshot.export.onnx_export import QUANTIZE_CHOICES, Quantize, export_encoder

__all__ = ["QUANTIZE_CHOICES", "QUANTIZE_SCHEME", "Quantize", "export_encoder", "quantize_rowwise"]
