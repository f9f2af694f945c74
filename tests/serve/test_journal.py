"""The write-ahead journal: replay at start-up, torn tails, aborts, and a crash between compaction and truncation."""
from __future__ import annotations

import json

import pytest

from fewshot.engine.engine import FewShotEngine
from fewshot.errors import CorruptIndexError
from fewshot.serve.journal import SEQ_KEY, Journal
from fewshot.serve.store import EngineStore
from tests.fakes import FakeTextEncoder
from tests.serve.conftest import fake_factory

PROBES = ["lost card", "hi", "refund", "zzz"]


def store(root) -> EngineStore:
    s = EngineStore(root, encoder_factory=fake_factory)
    s.open_all()
    return s


def labels(engine: FewShotEngine) -> list:
    return [(p.label, round(p.score, 6)) for p in engine.predict(PROBES)]


def test_restart_replays_the_journal_without_a_compaction(tmp_path):
    s = store(tmp_path)
    s.create("e", "fake-text")
    s.mutate("e", "add_class", {"name": "card", "examples": ["lost card"]})
    s.mutate("e", "add_class", {"name": "hello", "examples": ["hi"], "description": "greeting"})
    s.mutate("e", "add_examples", {"name": "card", "examples": ["card gone"]})
    s.mutate("e", "add_class", {"name": "gone", "examples": ["x"]})
    s.mutate("e", "remove_class", {"name": "gone"})
    expected = labels(s.get("e").engine)
    # no close(): as after kill -9, the save holds no class; the journal holds everything
    assert FewShotEngine.load(tmp_path / "e", encoder=FakeTextEncoder()).classes == []
    s2 = store(tmp_path)
    eng = s2.get("e").engine
    assert eng.classes == ["card", "hello"] and eng.raw_examples["card"] == ["lost card", "card gone"]
    assert labels(eng) == expected
    # start-up compacted: the save holds it all, the journal is empty, numbering goes on
    assert (tmp_path / ".journal" / "e.jsonl").read_bytes() == b""
    assert FewShotEngine.load(tmp_path / "e", encoder=FakeTextEncoder()).metadata[SEQ_KEY] == 5
    s2.mutate("e", "add_examples", {"name": "hello", "examples": ["hey"]})
    assert json.loads((tmp_path / ".journal" / "e.jsonl").read_text())["seq"] == 6
    assert store(tmp_path).get("e").engine.raw_examples["hello"] == ["hi", "hey"]


def test_a_torn_last_line_is_dropped(tmp_path):
    s = store(tmp_path)
    s.create("e", "fake-text")
    s.mutate("e", "add_class", {"name": "card", "examples": ["lost card"]})
    path = tmp_path / ".journal" / "e.jsonl"
    whole = json.dumps({"seq": 2, "op": "add_class", "args": {"name": "torn", "examples": ["x"]}}).encode()
    for tail in (whole[:17], whole):  # cut mid-line, or complete but without its newline: never acknowledged
        with open(path, "ab") as f:
            f.write(tail)
        s2 = store(tmp_path)
        assert "torn" not in s2.get("e").engine.classes and "card" in s2.get("e").engine.classes
        s2.mutate("e", "add_class", {"name": f"next{len(tail)}", "examples": ["y"]})
        assert f"next{len(tail)}" in store(tmp_path).get("e").engine.classes


def test_a_damaged_line_followed_by_entries_is_a_corrupt_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"seq": 1, "op": "remove_class", "args": {"name": "a"}}\n{"seq": 2, "op\n'
                     b'{"seq": 3, "op": "remove_class", "args": {"name": "b"}}\n')
    with pytest.raises(CorruptIndexError):
        Journal(path)


def test_a_crash_between_compaction_and_truncation_applies_nothing_twice(tmp_path):
    s = store(tmp_path)
    s.create("e", "fake-text")
    s.mutate("e", "add_class", {"name": "card", "examples": ["lost card"]})
    s.mutate("e", "add_examples", {"name": "card", "examples": ["card gone"]})
    handle = s.get("e")
    journal = (tmp_path / ".journal" / "e.jsonl").read_bytes()
    s.compact(handle)                                    # save with journal_seq = 2 ...
    (tmp_path / ".journal" / "e.jsonl").write_bytes(journal)   # ... and the truncation never happened
    eng = store(tmp_path).get("e").engine
    assert eng.raw_examples["card"] == ["lost card", "card gone"] and len(eng.index) == 2


def test_an_entry_that_failed_to_apply_is_aborted(tmp_path, monkeypatch):
    s = store(tmp_path)
    s.create("e", "fake-text")
    s.mutate("e", "add_class", {"name": "card", "examples": ["lost card"]})
    eng = s.get("e").engine

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(eng, "add_examples", boom)
    with pytest.raises(RuntimeError):
        s.mutate("e", "add_examples", {"name": "card", "examples": ["never"]})
    ops = [json.loads(line)["op"] for line in (tmp_path / ".journal" / "e.jsonl").read_text().splitlines()]
    assert ops == ["add_class", "add_examples", "abort"]
    assert store(tmp_path).get("e").engine.raw_examples["card"] == ["lost card"]


def test_leftovers_of_crashed_creates_and_deletes_are_cleared(tmp_path):
    s = store(tmp_path)
    s.create("keep", "fake-text")
    (tmp_path / "half").mkdir()                                   # a create killed before its first CURRENT
    (tmp_path / "half" / ".staging-000001-1").mkdir()
    (tmp_path / ".trash-gone-1234").mkdir()                       # a delete killed after its rename
    (tmp_path / ".journal" / "gone.jsonl").write_text("")
    (tmp_path / "notes").mkdir()                                  # a user's folder: left alone, not listed
    (tmp_path / "notes" / "todo.txt").write_text("hi")
    s2 = store(tmp_path)
    assert s2.names() == ["keep"]
    assert not (tmp_path / "half").exists() and not (tmp_path / ".trash-gone-1234").exists()
    assert not (tmp_path / ".journal" / "gone.jsonl").exists()
    assert (tmp_path / "notes" / "todo.txt").is_file()
