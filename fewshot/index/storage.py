"""Crash-safe saved directories: versioned snapshots + an atomically replaced pointer + checksums.

Layout of a saved directory ``D``::

    D/CURRENT                 name of the live snapshot (replaced atomically with os.replace)
    D/snap-<n>/MANIFEST.json  {"format_version", "kind", "files": {relative path: {"sha256", "bytes"}}}
    D/snap-<n>/...            the files

A save writes a new snapshot completely (fsync'ed, files and folders), then swaps CURRENT, then deletes the
other snapshots except the previous live one (it stays until the next save, so a reader that read CURRENT just
before the swap still finds its snapshot). A crash at any point leaves CURRENT naming a complete, checksummed
snapshot. Loading verifies every size and checksum before any file is parsed.

Saves of one directory are serialised across processes by an exclusive ``flock`` on ``D/.lock`` (where ``fcntl``
exists, i.e. not on Windows), so concurrent savers never delete each other's staging folders or snapshots.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from fewshot._core import sha256_file
from fewshot.errors import CorruptIndexError, InvalidInputError, SaveNotFoundError, VersionMismatchError

STORAGE_FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
POINTER = "CURRENT"
LOCK = ".lock"
T = TypeVar("T")
_SNAPSHOT = re.compile(r"^snap-(\d{6,})$")


def read_json_object(path: Path, format_version: int | None = None) -> dict:
    """Parse a JSON object written by fewshot, checking its ``format_version`` when given; typed errors."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"cannot read {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise CorruptIndexError(f"{path} is not a JSON object")
    if format_version is not None and obj.get("format_version") != format_version:
        raise VersionMismatchError(f"{path} has format version {obj.get('format_version')!r}; this fewshot "
                                   f"reads version {format_version}")
    return obj


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snapshots(root: Path) -> list[tuple[int, Path]]:
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _SNAPSHOT.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return sorted(found)


@contextlib.contextmanager
def save_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``root`` (``flock`` on ``root/.lock``; a no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: saves of one directory from several processes are not serialised
        yield
        return
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def atomic_save(root: str | os.PathLike, kind: str, write: Callable[[Path], None]) -> Path:
    """Create ``root`` if needed and write a new snapshot with ``write(snapshot_dir)``; returns the snapshot.

    ``root`` must be empty, missing, or an earlier save of this kind: other directories are refused so that a
    typo never turns a user's folder into a saved engine.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"cannot save to {root}: it is a file")
    if root.is_dir() and not (root / POINTER).is_file() and \
            any(not _is_leftover(p.name) for p in root.iterdir()):  # leftovers: a first save that crashed
        raise InvalidInputError(f"cannot save to {root}: the directory is not empty and holds no fewshot save")
    root.mkdir(parents=True, exist_ok=True)
    with save_lock(root):
        return _save_locked(root, kind, write)


def _save_locked(root: Path, kind: str, write: Callable[[Path], None]) -> Path:
    previous = _pointer_or_none(root)
    number = max([n for n, _ in _snapshots(root)] + [0]) + 1
    snapshot = root / f"snap-{number:06d}"
    staging = root / f".staging-{number:06d}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
        files = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            files[path.relative_to(staging).as_posix()] = {"sha256": sha256_file(path),
                                                          "bytes": path.stat().st_size}
        manifest = {"format_version": STORAGE_FORMAT_VERSION, "kind": kind, "files": files}
        with open(staging / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for folder in sorted((p for p in staging.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _fsync_dir(folder)  # nested folders first, so every entry is durable before the rename
        _fsync_dir(staging)
        os.rename(staging, snapshot)
        _fsync_dir(root)
        pointer_tmp = root / f".{POINTER}.tmp-{os.getpid()}"
        with open(pointer_tmp, "w", encoding="utf-8") as f:
            f.write(snapshot.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer_tmp, root / POINTER)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # best effort, under the lock (no other save is running): every snapshot but the new and the previous live
    # one (orphans of killed saves included), and other leftovers of crashed saves
    for _, old in _snapshots(root):
        if old.name not in (snapshot.name, previous):
            shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(f".{POINTER}.tmp-*"):
        leftover.unlink(missing_ok=True)
    return snapshot


def _is_leftover(name: str) -> bool:
    """Names a killed save can leave behind (before its first CURRENT exists)."""
    return bool(_SNAPSHOT.match(name)) or name == LOCK or name.startswith((".staging-", f".{POINTER}.tmp-"))


#: how often ``read_snapshot`` starts again when saves replaced the snapshot it was reading
READ_ATTEMPTS = 5


def read_snapshot(root: str | os.PathLike, kind: str, read: Callable[[Path], T]) -> T:
    """``read(live snapshot)`` (checksums verified first). If the snapshot is deleted while it is read (two newer
    saves came meanwhile: only the previous one is kept), start again on the new live one; a failure while CURRENT
    stays the same is real damage and raises at once."""
    for attempt in range(READ_ATTEMPTS):
        pointer = _pointer_or_none(Path(root))
        try:
            return read(open_snapshot(root, kind))
        except (CorruptIndexError, OSError):
            if attempt == READ_ATTEMPTS - 1 or _pointer_or_none(Path(root)) in (pointer, None):
                raise
    raise AssertionError("unreachable")


def _pointer_or_none(root: Path) -> str | None:
    try:
        return (root / POINTER).read_bytes().decode("utf-8", "replace").strip()
    except OSError:
        return None


def open_snapshot(root: str | os.PathLike, kind: str) -> Path:
    """Return the live snapshot of a saved directory after verifying its manifest, sizes and checksums."""
    root = Path(root)
    if not root.is_dir():
        raise SaveNotFoundError(f"no saved {kind} at {root}: not a directory")
    if not (root / POINTER).is_file():
        raise SaveNotFoundError(f"no saved {kind} at {root}: {POINTER} is missing")
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"cannot read {root / POINTER}: {exc}") from None
    if not _SNAPSHOT.match(name) or not (root / name).is_dir():
        raise CorruptIndexError(f"{root / POINTER} names {name!r}, which is not a snapshot in {root}")
    snapshot = root / name
    try:
        manifest = json.loads((snapshot / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"cannot read {snapshot / MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise CorruptIndexError(f"{snapshot / MANIFEST} is not a fewshot manifest")
    if manifest.get("format_version") != STORAGE_FORMAT_VERSION:
        raise VersionMismatchError(f"{root} was saved in storage format {manifest.get('format_version')!r}; "
                                   f"this fewshot reads format {STORAGE_FORMAT_VERSION}")
    if manifest.get("kind") != kind:
        raise CorruptIndexError(f"{root} holds a saved {manifest.get('kind')!r}, not a {kind!r}")
    for rel, meta in manifest.get("files", {}).items():
        path = snapshot / rel
        if ".." in Path(rel).parts or not path.is_file():
            raise CorruptIndexError(f"saved file {rel} is missing from {snapshot}")
        if not isinstance(meta, dict) or path.stat().st_size != meta.get("bytes") or \
                sha256_file(path) != meta.get("sha256"):
            raise CorruptIndexError(f"saved file {path} fails its checksum: the save is corrupt")
    return snapshot
