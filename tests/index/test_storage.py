import json

import pytest

from fewshot.errors import CorruptIndexError, InvalidInputError, VersionMismatchError
from fewshot.index import storage


def write_files(content):
    def write(d):
        (d / "a.txt").write_text(content)
        (d / "sub").mkdir()
        (d / "sub" / "b.bin").write_bytes(b"\x00\x01" * 10)
    return write


def test_save_then_open_verifies(tmp_path):
    root = tmp_path / "save"
    snap = storage.atomic_save(root, "thing", write_files("one"))
    assert storage.open_snapshot(root, "thing") == snap
    snap2 = storage.atomic_save(root, "thing", write_files("two"))
    assert storage.open_snapshot(root, "thing") == snap2 and (snap / "a.txt").read_text() == "one"  # previous kept
    assert (snap2 / "a.txt").read_text() == "two"
    snap3 = storage.atomic_save(root, "thing", write_files("three"))
    assert not snap.exists() and snap2.exists() and storage.open_snapshot(root, "thing") == snap3  # only one kept


def test_saves_from_two_processes_are_serialised_and_a_reader_always_loads(tmp_path):
    """Two processes save one directory 50 times each while this one opens it in a loop: no save fails or
    deletes the other's work, and every open returns a complete snapshot of one of the saved states."""
    import subprocess
    import sys
    import time

    root = tmp_path / "save"

    def write(d, text):
        (d / "a.txt").write_text(text)
        (d / "sub").mkdir()
        (d / "sub" / "b.txt").write_text(text * 50)

    def read(snap):
        text = (snap / "a.txt").read_text()
        assert (snap / "sub" / "b.txt").read_text() == text * 50, "a snapshot mixed two saves"
        return text

    storage.atomic_save(root, "thing", lambda d: write(d, "w0-0"))
    child = ("import sys; from pathlib import Path; from fewshot.index import storage\n"
             "def write(d, text):\n"
             "    (d / 'a.txt').write_text(text); (d / 'sub').mkdir(); (d / 'sub' / 'b.txt').write_text(text * 50)\n"
             "for i in range(50):\n"
             "    storage.atomic_save(Path(sys.argv[1]), 'thing', lambda d: write(d, f'w{sys.argv[2]}-{i}'))\n")
    writers = [subprocess.Popen([sys.executable, "-c", child, str(root), str(w)]) for w in (1, 2)]
    seen, reads, deadline = set(), 0, time.monotonic() + 120
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        seen.add(storage.read_snapshot(root, "thing", read))  # never fails: a replaced snapshot is read again
        reads += 1
    assert [w.wait(60) for w in writers] == [0, 0]
    final = storage.read_snapshot(root, "thing", read)
    assert final in ("w1-49", "w2-49") and len(seen) > 1 and reads > 1
    assert not list(root.glob(".staging-*")) and len(storage._snapshots(root)) == 2


def test_failed_write_keeps_previous_save(tmp_path):
    root = tmp_path / "save"
    storage.atomic_save(root, "thing", write_files("good"))

    def crash(d):
        (d / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        storage.atomic_save(root, "thing", crash)
    assert (storage.open_snapshot(root, "thing") / "a.txt").read_text() == "good"
    assert not list(root.glob(".staging-*"))


def test_half_written_snapshot_without_pointer_swap_is_ignored(tmp_path):
    root = tmp_path / "save"
    storage.atomic_save(root, "thing", write_files("good"))
    # a crash after the new snapshot was renamed but before CURRENT moved
    (root / "snap-000009").mkdir()
    (root / "snap-000009" / "a.txt").write_text("partial")
    assert (storage.open_snapshot(root, "thing") / "a.txt").read_text() == "good"


def test_corruption_and_version_are_typed(tmp_path):
    root = tmp_path / "save"
    snap = storage.atomic_save(root, "thing", write_files("good"))
    (snap / "a.txt").write_text("evil")
    with pytest.raises(CorruptIndexError, match="checksum"):
        storage.open_snapshot(root, "thing")
    (snap / "a.txt").write_text("good")
    with pytest.raises(CorruptIndexError, match="holds a saved"):
        storage.open_snapshot(root, "other")
    manifest = json.loads((snap / storage.MANIFEST).read_text())
    manifest["format_version"] = 42
    (snap / storage.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(VersionMismatchError):
        storage.open_snapshot(root, "thing")
    with pytest.raises(CorruptIndexError):
        storage.open_snapshot(tmp_path / "missing", "thing")


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(InvalidInputError):
        storage.atomic_save(tmp_path, "thing", write_files("x"))
    assert (tmp_path / "mine.txt").read_text() == "user data"
