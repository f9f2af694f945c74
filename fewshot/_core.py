"""Shared primitives every layer may use: vector checks, normalisation, softmax, hashing, torch threads.

numpy + ``fewshot.errors`` only (torch is imported lazily inside ``torch_threads``), so importing it is cheap
and it can sit under every other module without creating a cycle.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from fewshot.errors import DimensionMismatchError, EmptyInputError, FewShotError, InvalidInputError, NonFiniteError

__version__ = "0.1.0"


def construct(factory: Any, what: str, *args: Any, **options: Any) -> Any:
    """``factory(*args, **options)`` for a configuration object (classifier, adaptation, open-set detector): an
    unknown keyword or a value of the wrong type (a TypeError / ValueError from the constructor) becomes an
    InvalidInputError naming ``what``; fewshot's own errors pass through."""
    try:
        return factory(*args, **options)
    except FewShotError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"bad configuration for {what}: {exc}") from None


def plural(n: int, one: str, many: str | None = None) -> str:
    """``'1 class'``, ``'3 classes'``: a count with its noun (``many`` defaults to ``one + 's'``)."""
    return f"{n} {one if n == 1 else (many if many is not None else one + 's')}"


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low`` (bools rejected), else InvalidInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float, inclusive: bool = False) -> float:
    """``value`` as a finite float > ``low`` (>= with ``inclusive``), else InvalidInputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
            not math.isfinite(float(value)) or float(value) < low or (float(value) == low and not inclusive):
        raise InvalidInputError(f"{name} must be a finite number {'>=' if inclusive else '>'} {low}, got {value!r}")
    return float(value)


def as_float_vectors(x: object, what: str = "vectors") -> np.ndarray:
    """Convert user input to a real-valued float32 array, or raise InvalidInputError (never a bare
    ValueError/TypeError for strings, ragged lists, dicts, object or complex arrays). Shape and finiteness are
    checked by ``check_vectors``."""
    if isinstance(x, (str, bytes, dict)) or x is None:
        raise InvalidInputError(f"{what} must be a numeric (n, dim) array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"dtype {arr.dtype}")
        return arr.astype(np.float32, copy=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{what} must be a real-valued numeric (n, dim) array: {exc}") from None


def check_vectors(x: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """Validate (n, dim) finite float vectors; returns C-contiguous float32 (a 1-D vector becomes (1, dim))."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise DimensionMismatchError(f"{what} must be 2-D (n, {dim}); got shape {x.shape}")
    if x.shape[0] == 0:
        raise EmptyInputError(f"{what} is empty; pass at least one vector")
    if x.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have dimension {x.shape[1]}, expected {dim}")
    if not np.isfinite(x).all():
        raise NonFiniteError(f"{what} contain NaN or inf values")
    return np.ascontiguousarray(x)


def l2_normalise(x: np.ndarray, dtype: type | None = np.float32) -> np.ndarray:
    """Scale the rows of (n, d) (or a (d,) vector) to unit L2 norm along the last axis; zero rows stay zero.
    Returns C-contiguous ``dtype`` (float32 by default; None keeps the input's float type)."""
    x = np.asarray(x, dtype=dtype) if dtype is not None else np.asarray(x)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))


def class_sums(vectors: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, d) vectors and (n,) class indices in [0, n_classes) → (n_classes, d) float64 per-class sums (zero rows
    for classes without vectors). Sorted ``np.add.reduceat``: ~5x faster than ``np.add.at`` on 1,500 × 384."""
    vectors = np.asarray(vectors)
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.zeros((n_classes, vectors.shape[1]), np.float64)
    present = counts > 0
    if present.any():
        starts = np.cumsum(counts) - counts
        ordered = vectors[np.argsort(labels, kind="stable")].astype(np.float64, copy=False)
        sums[present] = np.add.reduceat(ordered, starts[present], axis=0)
    return sums


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax of (n, C) logits (stable)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_threads() -> int:
    """Torch threads for a training loop: 1 when the machine is already busier than its cores (measured here
    3-5x faster than 2 oversubscribed threads), else min(2, cores)."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores
    except OSError:
        busy = False
    return 1 if busy else max(1, min(2, cores))


_torch_threads_lock = threading.Lock()
_torch_threads_open: list[tuple[object, int]] = []   # (block token, count it asked for) of the blocks open now
_torch_threads_saved = [1]                            # the count from before the first open block


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; ``None`` leaves the count as it is. The one place fewshot
    changes torch's thread count, which is process-wide: blocks open in several threads at once (fold fits side by
    side, two engines fitting) share one record. When a block ends, the count becomes what the most recently
    opened block still open asked for, and the count from before the first of them once none is open (a plain
    save-and-restore per block would leave whichever count the last block to save had seen)."""
    if n is None:
        yield
        return
    import torch

    token = object()
    with _torch_threads_lock:
        if not _torch_threads_open:
            _torch_threads_saved[0] = torch.get_num_threads()
        _torch_threads_open.append((token, max(1, int(n))))
        torch.set_num_threads(_torch_threads_open[-1][1])
    try:
        yield
    finally:
        with _torch_threads_lock:
            _torch_threads_open[:] = [entry for entry in _torch_threads_open if entry[0] is not token]
            torch.set_num_threads(_torch_threads_open[-1][1] if _torch_threads_open else _torch_threads_saved[0])
