"""On-disk embedding cache: each (encoder, data set) pair is encoded once.

Key = sha256 of the encoder's fingerprint + the inputs' content (texts; image bytes or file bytes).
Stored as .npy (loaded with allow_pickle=False), written atomically.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.encoders.base import Encoder


def default_cache_dir() -> Path:
    """$FEWSHOT_CACHE_DIR, else ~/.cache/fewshot/embeddings."""
    return Path(os.environ.get("FEWSHOT_CACHE_DIR") or Path.home() / ".cache" / "fewshot" / "embeddings")


def encoder_fingerprint(encoder: Encoder) -> str:
    """Identity of an encoder's weights: its name plus, for local model folders/files, their sizes and mtimes."""
    parts = [encoder.name, str(encoder.dim)]
    for attr in ("source", "checkpoint_path"):
        path = getattr(encoder, attr, None)
        if isinstance(path, str) and os.path.exists(path):
            files = [path] if os.path.isfile(path) else sorted(
                str(p) for p in Path(path).rglob("*") if p.is_file())
            parts += [f"{f}:{os.path.getsize(f)}:{int(os.path.getmtime(f))}" for f in files]
    return "|".join(parts)


def content_hash(inputs: Sequence[Any]) -> str:
    """sha256 over the inputs: text content, image file bytes, or raw PIL/array pixels."""
    h = hashlib.sha256()
    for item in inputs:
        if isinstance(item, str) and not os.path.isfile(item):
            h.update(b"T" + item.encode("utf-8", "surrogatepass") + b"\x00")
        elif isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as f:
                h.update(b"F" + hashlib.sha256(f.read()).digest())
        elif hasattr(item, "tobytes"):
            size = getattr(item, "size", None)
            h.update(b"P" + repr((getattr(item, "mode", None), size, getattr(item, "shape", None))).encode()
                     + item.tobytes())
        else:
            raise TypeError(f"cannot hash input of type {type(item).__name__} for the embedding cache")
    return h.hexdigest()


def cached_encode(encoder: Encoder, inputs: Sequence[Any], cache_dir: str | os.PathLike | None = None,
                  show_progress_bar: bool | None = None, **encode_kwargs: Any) -> np.ndarray:
    """``encoder.encode(inputs)`` through the disk cache. Returns float32 (n, dim)."""
    inputs = list(inputs)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256((encoder_fingerprint(encoder) + "\n" + content_hash(inputs)).encode()).hexdigest()
    path = root / f"{key[:32]}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(inputs), encoder.dim):
                return cached
        except (ValueError, OSError):
            pass  # corrupt cache entry: re-encode and overwrite
    vectors = encoder.encode(inputs, show_progress_bar=show_progress_bar, **encode_kwargs)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, vectors, allow_pickle=False)
    os.replace(tmp, path)
    return vectors
