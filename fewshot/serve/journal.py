"""A per-engine write-ahead journal: JSON lines ``{"seq": n, "op": ..., "args": {...}}``, each fsynced before the
service answers the mutation it records.

Compaction is a normal ``FewShotEngine.save`` whose ``metadata["journal_seq"]`` is the last entry applied; replay
skips entries with ``seq <=`` that number, so a crash between the save and the journal's truncation never applies an
entry twice. A last line cut short by a crash (never acknowledged) is dropped when the journal is opened. An
``{"op": "abort", "args": {"seq": n}}`` entry cancels entry ``n`` (journaled, then failed to apply)."""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewshot.errors import CorruptIndexError

#: the metadata key of a save that records the last journal entry it contains
SEQ_KEY = "journal_seq"


@dataclass(frozen=True)
class Entry:
    seq: int
    op: str
    args: dict


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The journal file of one engine. ``append`` is durable when it returns. Not thread-safe by itself: the
    service appends under the engine's mutation lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.entries: list[Entry] = self._read_and_repair()
        self.last_seq = self.entries[-1].seq if self.entries else 0
        self._fd: int | None = None

    def _read_and_repair(self) -> list[Entry]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        entries: list[Entry] = []
        good = 0  # bytes of complete, parsed lines
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last and not line:
                break
            try:
                obj = json.loads(line.decode("utf-8"))
                entry = Entry(int(obj["seq"]), str(obj["op"]), dict(obj["args"]))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                if last or all(not rest.strip() for rest in lines[i + 1:]):
                    break  # a torn tail: the crash came mid-write, before the answer
                raise CorruptIndexError(f"journal {self.path} line {i + 1} cannot be parsed and is followed by "
                                        "more entries: the file is damaged") from None
            if last:
                break  # complete JSON but no newline: not fsynced as a whole line, never acknowledged
            if entries and entry.seq <= entries[-1].seq:
                raise CorruptIndexError(f"journal {self.path} line {i + 1}: sequence {entry.seq} after "
                                        f"{entries[-1].seq}")
            entries.append(entry)
            good += len(line) + 1
        if good != len(data):  # drop the torn tail so the next append starts a clean line
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        return entries

    def pending(self, after: int) -> Iterator[Entry]:
        """Entries to replay over a save that holds everything up to ``after``: later ones, minus aborted ones."""
        aborted = {int(e.args.get("seq", -1)) for e in self.entries if e.op == "abort"}
        for e in self.entries:
            if e.seq > after and e.op != "abort" and e.seq not in aborted:
                yield e

    def append(self, op: str, args: dict[str, Any], seq: int | None = None) -> int:
        """Write one entry and fsync it; returns its sequence number."""
        with self._lock:
            seq = self.last_seq + 1 if seq is None else seq
            line = json.dumps({"seq": seq, "op": op, "args": args}, ensure_ascii=False).encode("utf-8") + b"\n"
            if self._fd is None:
                existed = self.path.exists()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                if not existed:
                    _fsync_dir(self.path.parent)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self.last_seq = seq
            self.entries.append(Entry(seq, op, args))
            return seq

    def reset(self, last_seq: int) -> None:
        """After a compaction that holds every entry: an empty journal continuing from ``last_seq``."""
        with self._lock:
            self.close()
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            self.entries, self.last_seq = [], max(self.last_seq, last_seq)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        with self._lock:
            self.close()
            self.path.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
