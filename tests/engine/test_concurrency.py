"""8 predicting threads + 1 mutating thread for a bounded time: zero errors, and every result equals what the
engine would have returned in some state between the start and the end of that call (linearisability against
the serial history of mutations)."""
from __future__ import annotations

import threading
import time

import numpy as np

from fewshot import FewShotEngine
from tests.fakes import FakeTextEncoder, unit

QUERIES = unit(np.random.default_rng(5), 6)
TEXTS = ["query one", "query two", "another query"]


def mutations(n: int):
    """A deterministic list of (method, args, kwargs) applied one by one by the writer."""
    rng = np.random.default_rng(1)
    ops, live = [], ["base0", "base1"]
    for i in range(n):
        kind = ("add", "examples", "vectors", "describe", "remove")[i % 5]
        if kind == "add" or len(live) < 3:
            name = f"k{i}"
            ops.append(("add_class", (name,), {"examples": [f"ex {i}", f"ex {i} b"], "description": f"class {i}"}))
            live.append(name)
        elif kind == "examples":
            ops.append(("add_examples", (live[i % len(live)], [f"more {i}"]), {}))
        elif kind == "vectors":
            ops.append(("add_vectors", (live[-1], unit(rng, 2)), {}))
        elif kind == "describe":
            ops.append(("set_description", (live[-1], f"new description {i}"), {}))
        else:
            ops.append(("remove_class", (live.pop(2 + i % (len(live) - 2)),), {}))
    return ops


def new_engine(index_type: str) -> FewShotEngine:
    eng = FewShotEngine(FakeTextEncoder(), index_type=index_type)
    eng.add_class("base0", examples=["zero", "nothing"])
    eng.add_class("base1", description="one thing")
    return eng


def observe(eng: FewShotEngine):
    """What a reader sees: predict (texts) + predict_vectors (+ top_k) + predict_proba, as comparable values."""
    a = [(p.label, round(p.score, 5), tuple((l, round(s, 5)) for l, s in p.top_k))
         for p in eng.predict(TEXTS, top_k=3)]
    return a


def observe_vectors(eng: FewShotEngine):
    return [(p.label, tuple(l for l, _ in p.top_k)) for p in eng.predict_vectors(QUERIES, top_k=4)]


def run(index_type: str, seconds: float = 4.0, n_ops: int = 400):
    eng = new_engine(index_type)
    ops = mutations(n_ops)
    done = [0]                      # number of mutations completed (written only by the writer)
    records, errors = [], []
    stop = threading.Event()

    def writer():
        try:
            for method, args, kwargs in ops:
                if stop.is_set():
                    return
                getattr(eng, method)(*args, **kwargs)
                done[0] += 1
                time.sleep(0.001)
        except Exception as exc:  # noqa: BLE001
            errors.append(("writer", repr(exc)))
        finally:
            stop.set()

    def reader(r: int):
        try:
            while not stop.is_set():
                lo = done[0]
                if r % 2:
                    kind, got = "texts", observe(eng)
                else:
                    kind, got = "vectors", observe_vectors(eng)
                hi = done[0]
                records.append((kind, lo, hi, got))
                time.sleep(0.002)
        except Exception as exc:  # noqa: BLE001
            errors.append((f"reader{r}", repr(exc)))
            stop.set()

    threads = [threading.Thread(target=reader, args=(r,)) for r in range(8)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    start = time.monotonic()  # bounded: `seconds`, extended (to 20 s at most) until 10 mutations and 60 reads
    while not stop.wait(0.05) and (time.monotonic() - start < seconds or done[0] < 10 or len(records) < 60) \
            and time.monotonic() - start < 20:
        pass
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert done[0] >= 10 and len(records) > 50, (done[0], len(records))

    # replay the same mutations serially; state s = after s mutations
    serial = new_engine(index_type)
    states = [(observe(serial), observe_vectors(serial))]
    for method, args, kwargs in ops[:done[0]]:
        getattr(serial, method)(*args, **kwargs)
        states.append((observe(serial), observe_vectors(serial)))
    for kind, lo, hi, got in records:
        # the writer counts a mutation after it returns: one that took effect while this call ran may not be
        # counted in ``hi`` yet, so the states the call may have seen run to hi + 1
        candidates = [states[s][0 if kind == "texts" else 1] for s in range(lo, min(hi + 1, done[0]) + 1)]
        assert got in candidates, f"a {kind} result matches no serial state in [{lo}, {hi}]"
    return done[0], len(records)


def test_eight_readers_one_writer_flat():
    run("flat", seconds=2.0)


def test_eight_readers_one_writer_hnsw():
    run("hnsw", seconds=2.0)
