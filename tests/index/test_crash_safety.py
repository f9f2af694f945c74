"""SIGKILL a process at random points while it saves an engine over and over: the directory always loads the
last completed save (or the one in flight, if its pointer swap finished) and predicts exactly as it did."""
from __future__ import annotations

import os
import random
import signal
import time

import numpy as np

from fewshot import FewShotEngine
from fewshot.errors import CorruptIndexError
from tests.fakes import FakeTextEncoder, unit

QUERIES = unit(np.random.default_rng(123), 8)


def engine_at(step: int) -> FewShotEngine:
    """The deterministic engine the child saves at ``step`` (one more class per step, some removed)."""
    eng = FewShotEngine(FakeTextEncoder(), index_type="hnsw" if step % 2 else "flat")
    rng = np.random.default_rng(step)
    for c in range(3 + step % 5):
        eng.add_class(f"s{step}-c{c}", vectors=unit(rng, 400))  # big enough that a save takes a while
    eng.remove_class(f"s{step}-c1")
    return eng


def expected(step: int):
    return [p.top_k for p in engine_at(step).predict_vectors(QUERIES, top_k=3)]


def child(root: str, progress: str, first: int) -> None:  # runs in the forked child, never returns
    try:
        step = first
        while True:
            engine_at(step).save(root)
            # written aside and renamed: a kill between truncating and writing would leave an empty file
            fd = os.open(progress + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(fd, str(step).encode())
            os.fsync(fd)
            os.close(fd)
            os.replace(progress + ".tmp", progress)
            step += 1
    finally:
        os._exit(1)


def test_sigkill_mid_save_keeps_a_loadable_save(tmp_path):
    rnd = random.Random(0)
    root, progress = tmp_path / "eng", tmp_path / "progress"
    cache: dict[int, list] = {}
    step, kills, last = 0, 0, None  # last: the step whose save the directory held before this child
    deadline = time.monotonic() + 30
    while kills < 25 and time.monotonic() < deadline:
        first_save = not (root / "CURRENT").exists()
        progress.unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:
            child(str(root), str(progress), step)
        time.sleep(rnd.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        if not progress.exists() and last is None:  # killed before any save ever finished
            if first_save:
                try:
                    FewShotEngine.load(root, encoder=FakeTextEncoder())
                except CorruptIndexError:
                    pass  # nothing was ever saved: a typed error, and the next save must still work
                else:
                    assert (root / "CURRENT").exists()
            continue
        # allowed: the last save this child completed, or the one in flight if its pointer swap finished;
        # when the child completed none: the previous save, or the child's first one
        done = int(progress.read_text()) if progress.exists() else None
        allowed = (done, done + 1) if done is not None else (last, step)
        loaded = FewShotEngine.load(root, encoder=FakeTextEncoder())
        step_of_save = int(loaded.classes[0].split("-")[0][1:])
        assert step_of_save in allowed, (step_of_save, allowed)
        got = [p.top_k for p in loaded.predict_vectors(QUERIES, top_k=3)]
        if step_of_save not in cache:
            cache[step_of_save] = expected(step_of_save)
        assert got == cache[step_of_save]
        last = step_of_save
        step = max(step, step_of_save) + 2
    assert kills >= 10
    # leftovers of killed saves never block the next save, and are cleaned by it; the previous live snapshot stays
    # (a reader may have just read CURRENT), with the lock file
    before = (root / "CURRENT").read_text().strip()
    engine_at(0).save(root)
    assert sorted(p.name for p in root.iterdir()) == sorted(["CURRENT", ".lock", before,
                                                            (root / "CURRENT").read_text().strip()])


def test_killed_first_save_does_not_block_later_saves(tmp_path):
    """A save killed before CURRENT ever existed leaves only fewshot leftovers; saving there must still work."""
    root = tmp_path / "eng"
    eng = engine_at(3)
    for delay in (0.0, 0.02, 0.05, 0.1):
        pid = os.fork()
        if pid == 0:
            try:
                eng.save(root)
                time.sleep(10)
            finally:
                os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if not (root / "CURRENT").exists():
            break
    # fake the worst case explicitly too: a staging dir and a renamed snapshot without CURRENT
    import shutil
    shutil.rmtree(root, ignore_errors=True)
    (root / ".staging-000001-99999").mkdir(parents=True)
    (root / "snap-000001").mkdir()
    (root / ".CURRENT.tmp-99999").write_text("snap-000001\n")
    eng.save(root)
    loaded = FewShotEngine.load(root, encoder=FakeTextEncoder())
    assert [p.top_k for p in loaded.predict_vectors(QUERIES, top_k=3)] == expected(3)
    assert sorted(p.name for p in root.iterdir()) == [".lock", "CURRENT", "snap-000002"]  # no previous live one
