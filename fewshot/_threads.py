"""Scoped thread settings for the BLAS libraries numpy and scipy call (threadpoolctl only).

Small dense algebra (384 × 384 Cholesky factors, (1,500, 384) products in the open-set fit) gains little from a
second BLAS thread, and on a busy machine OpenBLAS's spinning threads make it up to 10x slower (measured by
``benchmarks/engine_latency.py``: the first prediction after a change took 3.4 s with 2 BLAS threads at load 5,
0.3 s with 1). ``single_threaded_blas()`` runs a block with one BLAS thread and puts back the previous setting
when the calling thread's outermost block ends. The BLAS copies numpy, scipy and faiss ship here keep the setting
partly per thread, partly per process; where it is per process, blocks overlapping in two threads may end on one
BLAS thread until the next block ends (slower at worst, never a different result)."""
from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fewshot._core import default_threads

_T = TypeVar("_T")
_R = TypeVar("_R")

_local = threading.local()
_controller: tuple[int, object] | None = None   # (len(sys.modules) when built, threadpoolctl.ThreadpoolController)


def _blas_controller():
    """A ``threadpoolctl.ThreadpoolController`` of the loaded libraries, rebuilt only when modules were imported
    since (one may have loaded another BLAS): building one scans the process's shared libraries (~3 ms), which
    would otherwise be paid on every open-set or calibration fit."""
    global _controller
    from threadpoolctl import ThreadpoolController

    loaded = len(sys.modules)
    if _controller is None or _controller[0] != loaded:
        _controller = (loaded, ThreadpoolController())
    return _controller[1]


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with the BLAS pools limited to one thread (re-entrant within a thread)."""
    if getattr(_local, "active", False):
        yield
        return
    _local.active = True
    try:
        with _blas_controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        _local.active = False


def map_side_by_side(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``[fn(item) for item in items]``, run on ``default_threads()`` threads (one after another when that is 1, or
    for one item). For independent fits whose numpy / torch work releases the interpreter lock; the caller keeps
    each one single-threaded inside (``single_threaded_blas``, ``torch_threads(1)``), so two fits use two cores
    instead of two contending pools. The results are in ``items``' order and equal to the sequential ones."""
    items = list(items)
    workers = min(default_threads(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="fewshot-fit") as pool:
        return list(pool.map(fn, items))
