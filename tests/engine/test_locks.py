"""fewshot.engine.locks.ReadWriteLock: shared reads, exclusive writes, writer priority, re-entrancy; and the engine
serving predictions under the shared side."""
import threading
import time

import numpy as np
import pytest

from fewshot import FewShotEngine
from fewshot.engine.locks import ReadWriteLock
from tests.fakes import FakeTextEncoder, unit


def test_readers_share_the_lock():
    lock, inside, release = ReadWriteLock(), threading.Barrier(3, timeout=10), threading.Event()

    def reader():
        with lock.read():
            inside.wait()           # all three readers are inside at the same time, or this times out
            release.wait(10)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    with lock.read():
        inside.wait()
        release.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)


def test_a_writer_excludes_readers_and_a_waiting_writer_goes_before_new_readers():
    lock, order = ReadWriteLock(), []
    reading, writer_waiting = threading.Event(), threading.Event()

    def first_reader():
        with lock.read():
            reading.set()
            assert writer_waiting.wait(10)
            time.sleep(0.1)          # the writer is queued now
            order.append("reader 1 done")

    def writer():
        assert reading.wait(10)
        writer_waiting.set()
        with lock:
            order.append("writer")

    def late_reader():
        assert writer_waiting.wait(10)
        time.sleep(0.05)             # arrives while the writer waits: must not overtake it
        with lock.read():
            order.append("reader 2")

    threads = [threading.Thread(target=f) for f in (first_reader, writer, late_reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["reader 1 done", "writer", "reader 2"]


def test_reentrancy_and_the_refused_upgrade():
    lock = ReadWriteLock()
    with lock:
        with lock:
            with lock.read():  # the writer may read
                assert lock._is_owned()
        assert lock._is_owned()
    assert not lock._is_owned()
    with lock.read():
        with lock.read():
            pass
        with pytest.raises(RuntimeError, match="read lock"):
            lock.acquire()
    with pytest.raises(RuntimeError):
        lock.release()
    done = threading.Event()
    threading.Thread(target=lambda: (lock.acquire(), lock.release(), done.set())).start()
    assert done.wait(10)  # every hold above was released


def test_predictions_run_in_parallel_under_the_shared_side_and_refit_nothing_without_a_change(monkeypatch):
    eng = FewShotEngine(FakeTextEncoder())
    eng.add_class("a", examples=["alpha one", "alpha two", "alpha three"])
    eng.add_class("b", examples=["beta one", "beta two", "beta three"])
    queries = unit(np.random.default_rng(0), 4)
    fits = []
    real_fit = type(eng.classifier).fit
    monkeypatch.setattr(type(eng.classifier), "fit", lambda self, support: (fits.append(1), real_fit(self, support))[1])
    first = eng.predict_vectors(queries, reject=True)
    assert eng.openset is not None and len(fits) >= 1
    n = len(fits)
    inside = threading.Barrier(2, timeout=10)

    original = type(eng.classifier).scores

    def slow_scores(self, q):  # two predictions inside the engine at once, or the barrier times out
        if len(q) == len(queries):
            inside.wait()
        return original(self, q)

    monkeypatch.setattr(type(eng.classifier), "scores", slow_scores)
    results = []
    threads = [threading.Thread(target=lambda: results.append(eng.predict_vectors(queries, reject=True)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 2 and all(r == first for r in results)
    assert len(fits) == n  # nothing was refitted: the support did not change


def test_a_change_then_a_prediction_without_rejection_fits_no_open_set_detector(monkeypatch):
    """On a large support the first ``predict(reject=False)`` after a change fits only the LOO calibration (no
    covariances): the detector is fitted when rejection is first asked for, on the same LOO scores."""
    from fewshot.openset import loo
    from fewshot.openset.detector import OpenSetDetector

    rng = np.random.default_rng(0)
    eng = FewShotEngine(FakeTextEncoder())
    centres = unit(rng, 7)

    def around(c):      # 12 vectors near centre c: neighbouring classes overlap, so LOO makes mistakes
        x = centres[c] + 0.35 * rng.standard_normal((12, centres.shape[1]))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    for c in range(6):
        eng.add_class(f"c{c}", vectors=around(c))
    detector_fits, loo_fits = [], []
    real_fit, real_held_out = OpenSetDetector.fit, loo.HeldOut.fit.__func__
    monkeypatch.setattr(OpenSetDetector, "fit", lambda self, *a, **k: (detector_fits.append(1),
                                                                       real_fit(self, *a, **k))[1])
    monkeypatch.setattr(loo.HeldOut, "fit", classmethod(lambda cls, *a, **k: (loo_fits.append(1),
                                                                              real_held_out(cls, *a, **k))[1]))
    queries = unit(rng, 5)
    eng.add_class("late", vectors=around(6))
    plain = eng.predict_vectors(queries)
    assert eng.score_meaning == "calibrated"
    assert not detector_fits and len(loo_fits) == 1 and eng.openset is None
    rejecting = eng.predict_vectors(queries, reject=True)
    assert len(detector_fits) == 1 and len(loo_fits) == 1        # the detector read the calibration's scores
    assert [p.label for p in plain] == [p.label if p.label is not None else q.label
                                        for p, q in zip(rejecting, plain)]
    assert eng.predict_vectors(queries) == plain                  # and nothing refits without a change
    assert len(loo_fits) == 1


def test_a_learned_classifier_from_the_constructor_serves_its_first_prediction():
    """The first prediction fits the classifier before asking whether its scores are calibrated (a learned
    classifier has no state to ask about until it is fitted)."""
    for method in ("linear", "logreg", "tip-adapter", "fusion"):
        eng = FewShotEngine(FakeTextEncoder(), classifier=method)
        eng.add_class("a", examples=["alpha one", "alpha two", "alpha three"])
        eng.add_class("b", examples=["beta one", "beta two", "beta three"])
        probs = eng.predict_proba(["alpha one", "beta two"])
        assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert [p.label for p in eng.predict(["alpha one", "beta two"])] == ["a", "b"]  # its own examples
        assert len(eng.predict(["alpha one", "beta two"], reject=True)) == 2
