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
    assert storage.open_snapshot(root, "thing") == snap2 and not snap.exists()
    assert (snap2 / "a.txt").read_text() == "two"


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
