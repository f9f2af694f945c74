"""The engines a service holds: ``ROOT/<engine>/`` is a normal ``FewShotEngine.save`` directory and
``ROOT/.journal/<engine>.jsonl`` its write-ahead journal (``fewshot.serve.journal``).

A mutation takes the engine's mutation lock, is checked against the engine (so a bad request is refused before it
is written anywhere), journaled and fsynced, then applied. Start-up loads each save, replays its journal and
compacts. Predictions never take the mutation lock (the engine's own lock keeps them consistent)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewshot.encoders.base import Encoder, check_texts
from fewshot.engine.engine import FewShotEngine
from fewshot.errors import (
    CorruptIndexError,
    DuplicateClassError,
    EmptyClassError,
    EngineExistsError,
    FewShotError,
    InvalidInputError,
    UnknownClassError,
    UnknownEngineError,
)
from fewshot.index.storage import POINTER, open_snapshot, read_json_object
from fewshot.serve.journal import SEQ_KEY, Journal

log = logging.getLogger("fewshot.serve")

ENGINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENGINE_NAME_PATTERN = ENGINE_NAME.pattern
JOURNAL_DIR = ".journal"
_TRASH = ".trash-"

#: builds an encoder from its name (``fewshot.encoders.load_encoder`` by default; tests pass a fake)
EncoderFactory = Callable[[str], Encoder]


@dataclass
class Handle:
    """One engine with its journal and mutation lock."""

    name: str
    directory: Path
    engine: FewShotEngine
    journal: Journal
    encoder_name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    deleted: bool = False
    since_compaction: int = 0


def _apply(engine: FewShotEngine, op: str, args: dict) -> None:
    if op == "add_class":
        engine.add_class(args["name"], examples=args.get("examples") or None, description=args.get("description"))
    elif op == "add_examples":
        engine.add_examples(args["name"], args["examples"])
    elif op == "remove_class":
        engine.remove_class(args["name"])
    else:
        raise InvalidInputError(f"unknown journal operation {op!r}")


def check_mutation(engine: FewShotEngine, op: str, args: dict) -> None:
    """Everything a mutation could be refused for, checked before it is journaled."""
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"a class name must be a non-empty string, got {name!r}")
    if op == "add_class":
        if name in engine.classes:
            raise DuplicateClassError(f"class {name!r} already exists; add examples to it or remove it first")
        examples, description = args.get("examples") or [], args.get("description")
        if examples:
            check_texts(examples)
        if description is not None and (not isinstance(description, str) or not description.strip()):
            raise InvalidInputError(f"description must be a non-empty string, got {description!r}")
        if not examples and description is None:
            raise EmptyClassError(f"class {name!r} needs examples or a description; got neither")
    elif op in ("add_examples", "remove_class"):
        if name not in engine.classes:
            raise UnknownClassError(f"unknown class {name!r}; known: {engine.classes[:20]}")
        if op == "add_examples":
            check_texts(args.get("examples") or [])
    else:
        raise InvalidInputError(f"unknown operation {op!r}")


def check_text_encoder(handle: Handle) -> None:
    if "text" not in handle.engine.encoder.modalities:
        raise InvalidInputError(f"engine {handle.name!r} embeds {sorted(handle.engine.encoder.modalities)}; "
                                "this service takes texts only")


def saved_encoder_name(directory: Path) -> str:
    """The encoder name recorded in a save (for an ``encoder_factory`` that builds it)."""
    from fewshot.engine.persistence import SNAPSHOT_KIND

    name = read_json_object(open_snapshot(directory, SNAPSHOT_KIND) / "engine.json").get("encoder")
    if not isinstance(name, str):
        raise CorruptIndexError(f"{directory} records no encoder name")
    return name


class EngineStore:
    """Every engine under ``root``; thread-safe."""

    def __init__(self, root: str | os.PathLike, encoder_factory: EncoderFactory | None = None,
                 compact_every: int = 1000):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.journal_dir = self.root / JOURNAL_DIR
        self.journal_dir.mkdir(exist_ok=True)
        self.encoder_factory, self.compact_every = encoder_factory, int(compact_every)
        self._lock = threading.Lock()
        self._handles: dict[str, Handle] = {}
        self._compacting: set[str] = set()
        self._creating: set[str] = set()

    # ------------------------------------------------------------------ start-up
    def open_all(self) -> None:
        """Load every save under root, replay its journal, compact; drop leftovers of crashed creates/deletes."""
        saves = []
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(_TRASH):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir() and ENGINE_NAME.match(p.name):
                if (p / POINTER).is_file():
                    saves.append(p.name)
                elif all(c.name.startswith(("snap-", ".staging-", f".{POINTER}.tmp-", ".lock")) for c in p.iterdir()):
                    shutil.rmtree(p, ignore_errors=True)  # a create that crashed before its first save completed
        if saves:  # engines load in parallel (encoder sessions, checksums): start-up is the slowest, not the sum
            with ThreadPoolExecutor(max_workers=min(4, len(saves)), thread_name_prefix="fewshot-load") as pool:
                for name, handle in zip(saves, pool.map(self._open, saves)):
                    self._handles[name] = handle
        for j in self.journal_dir.glob("*.jsonl"):
            if j.stem not in self._handles:
                j.unlink(missing_ok=True)  # the engine was deleted (or never created) before a crash

    def _journal_path(self, name: str) -> Path:
        return self.journal_dir / f"{name}.jsonl"

    def _load(self, directory: Path) -> FewShotEngine:
        if self.encoder_factory is None:
            return FewShotEngine.load(directory)
        return FewShotEngine.load(directory, encoder=self.encoder_factory(saved_encoder_name(directory)))

    def _open(self, name: str) -> Handle:
        directory = self.root / name
        engine = self._load(directory)
        journal = Journal(self._journal_path(name))
        saved = int(engine.metadata.get(SEQ_KEY, 0))
        replayed = 0
        for entry in journal.pending(saved):
            try:
                _apply(engine, entry.op, entry.args)
            except FewShotError as exc:  # refused live too (then an abort follows it); never half-applied
                log.warning("engine %s: journal entry %d (%s) not applied: %s", name, entry.seq, entry.op, exc)
            engine.metadata[SEQ_KEY] = entry.seq
            replayed += 1
        journal.last_seq = max(journal.last_seq, saved)
        handle = Handle(name, directory, engine, journal, engine.encoder.name)
        if replayed or journal.entries:
            self._compact_locked(handle)
        log.info("engine %s: %d classes, %d journal entries replayed", name, len(engine.classes), replayed)
        return handle

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._handles)

    def get(self, name: str) -> Handle:
        with self._lock:
            handle = self._handles.get(name)
        if handle is None:
            raise UnknownEngineError(f"unknown engine {name!r}; create it with PUT /v1/engines/{name}")
        return handle

    # ------------------------------------------------------------------ engines
    def create(self, name: str, encoder_name: str) -> Handle:
        """A new, empty engine saved under root (the name is reserved while its encoder loads)."""
        if not ENGINE_NAME.match(name):
            raise InvalidInputError(f"engine name {name!r} must match {ENGINE_NAME_PATTERN}")
        directory = self.root / name
        with self._lock:
            if name in self._handles or name in self._creating:
                raise EngineExistsError(f"engine {name!r} already exists; DELETE it first to replace it")
            if directory.exists():
                raise EngineExistsError(f"{directory} exists and is not a fewshot save; move it away first")
            self._creating.add(name)
        try:
            encoder = self.encoder_factory(encoder_name) if self.encoder_factory is not None else encoder_name
            engine = FewShotEngine(encoder=encoder)  # may raise EncoderUnavailableError: nothing written yet
            if "text" not in engine.encoder.modalities:
                raise InvalidInputError(f"encoder {engine.encoder.name!r} embeds "
                                        f"{sorted(engine.encoder.modalities)}; this service takes texts only")
            journal_path = self._journal_path(name)
            journal_path.unlink(missing_ok=True)
            engine.metadata[SEQ_KEY] = 0
            engine.save(directory)  # its CURRENT pointer is the moment the engine exists
            handle = Handle(name, directory, engine, Journal(journal_path), encoder_name)
            with self._lock:
                self._handles[name] = handle
            return handle
        finally:
            with self._lock:
                self._creating.discard(name)

    def delete(self, name: str) -> None:
        handle = self.get(name)
        with handle.lock:
            with self._lock:
                if self._handles.get(name) is not handle:
                    raise UnknownEngineError(f"unknown engine {name!r}")
                trash = self.root / f"{_TRASH}{name}-{uuid.uuid4().hex[:8]}"
                os.rename(handle.directory, trash)  # the moment the engine is gone
                fd = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                del self._handles[name]
                handle.deleted = True
            handle.journal.remove()
            shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ mutations
    def mutate(self, name: str, op: str, args: dict[str, Any]) -> Handle:
        """Check, journal (fsynced), apply; returns the handle. A refused mutation changes nothing."""
        handle = self.get(name)
        with handle.lock:
            if handle.deleted:
                raise UnknownEngineError(f"unknown engine {name!r}")
            check_text_encoder(handle)
            check_mutation(handle.engine, op, args)
            seq = handle.journal.append(op, args)
            try:
                _apply(handle.engine, op, args)
            except BaseException:
                handle.journal.append("abort", {"seq": seq})
                raise
            handle.engine.metadata[SEQ_KEY] = seq
            handle.since_compaction += 1
            due = handle.since_compaction >= self.compact_every
        if due:
            self.compact_soon(handle)
        return handle

    # ------------------------------------------------------------------ compaction
    def compact(self, handle: Handle) -> None:
        with handle.lock:
            if not handle.deleted:
                self._compact_locked(handle)

    def _compact_locked(self, handle: Handle) -> None:
        handle.engine.metadata[SEQ_KEY] = handle.journal.last_seq
        handle.engine.save(handle.directory)
        handle.journal.reset(handle.journal.last_seq)
        handle.since_compaction = 0

    def compact_soon(self, handle: Handle) -> None:
        """Compact in a background thread (one at a time per engine)."""
        with self._lock:
            if handle.name in self._compacting:
                return
            self._compacting.add(handle.name)

        def run() -> None:
            try:
                self.compact(handle)
            except Exception:  # the journal still holds everything: nothing is lost
                log.exception("engine %s: compaction failed", handle.name)
            finally:
                with self._lock:
                    self._compacting.discard(handle.name)

        threading.Thread(target=run, name=f"compact-{handle.name}", daemon=True).start()

    def close(self) -> None:
        """Compact every engine with journal entries (graceful shutdown) and close the journals."""
        for name in self.names():
            try:
                handle = self.get(name)
                with handle.lock:
                    if not handle.deleted and handle.journal.entries:
                        self._compact_locked(handle)
                    handle.journal.close()
            except Exception:
                log.exception("engine %s: compaction at shutdown failed", name)
