"""Corpus-scale classify and embed: CSV / JSONL / Parquet in, Parquet out, in one streaming process (bounded
memory) or on Ray Data (``ray=True`` or an address; ``pip install 'fewshot[ray]'``), with the rows of
``FewShotEngine.predict`` / ``Encoder.encode`` either way.

    from fewshot.batch import classify_files, embed_files, engine_from_embeddings
    classify_files("engine/", ["tickets/*.parquet"], "predictions/", top_k=3, reject=True)
    classify_files("engine/", "tickets/", "predictions/", ray=True, workers=8)
    ds = classify_dataset("tickets/*.parquet", "engine/")   # a lazy ray.data.Dataset to compose further

The Ray names (``classify_dataset``, ``embed_dataset``, ``read_inputs``, ``EnginePredictor``,
``EncoderEmbedder``) import Ray when first used. Output folders are published whole (``fewshot.batch.io``).
"""
from __future__ import annotations

from typing import Any

from fewshot.batch.classify import classify_files
from fewshot.batch.embed import embed_files
from fewshot.batch.from_embeddings import LabelledVectors, engine_from_embeddings, labelled_vectors
from fewshot.batch.jobs import BatchResult

_RAY_NAMES = ("classify_dataset", "embed_dataset", "read_inputs", "EnginePredictor", "EncoderEmbedder")

__all__ = ["BatchResult", "LabelledVectors", "classify_files", "embed_files", "engine_from_embeddings",
           "labelled_vectors", *_RAY_NAMES]


def __getattr__(name: str) -> Any:
    if name in _RAY_NAMES:
        from fewshot.batch import ray_pipeline

        return getattr(ray_pipeline, name)
    raise AttributeError(f"module 'fewshot.batch' has no attribute {name!r}")
