"""The engine's readers-writer lock: predictions share it, changes take it alone, a waiting writer goes first.

``with lock:`` (and ``acquire`` / ``release``) is the WRITE side, re-entrant for the thread that holds it, which
may also take the read side. ``with lock.read():`` is the shared side, re-entrant per thread. A thread holding
only the read side cannot take the write side (that upgrade could deadlock two readers): it raises.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ReadWriteLock:
    """Many readers or one writer, writer priority (a waiting writer blocks new readers, so a change is never
    starved by a stream of predictions)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0                     # read holds by threads that are not the writer
        self._writer: int | None = None       # thread ident of the write holder
        self._write_depth = 0
        self._waiting_writers = 0
        self._local = threading.local()       # .depth: this thread's read holds

    def _read_depth(self) -> int:
        return getattr(self._local, "depth", 0)

    # ------------------------------------------------------------------ write side
    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
                return True
            if self._read_depth():
                raise RuntimeError("a thread holding the engine's read lock cannot take its write lock")
            self._waiting_writers += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer, self._write_depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._writer != threading.get_ident():
                raise RuntimeError("release of a write lock this thread does not hold")
            self._write_depth -= 1
            if not self._write_depth:
                self._writer = None
                self._cond.notify_all()

    def __enter__(self) -> ReadWriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _is_owned(self) -> bool:
        """Whether this thread holds the write side (the name ``threading.RLock`` uses)."""
        return self._writer == threading.get_ident()

    # ------------------------------------------------------------------ read side
    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        depth = self._read_depth()
        counted = self._writer != me and not depth  # a nested read, or one inside the write lock, never waits
        if counted:
            with self._cond:
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if counted:
                with self._cond:
                    self._readers -= 1
                    if not self._readers:
                        self._cond.notify_all()
