"""Latency after a change, and parallel reads: the figures of the hardening issue, on synthetic vectors.

Support: 50 classes × 30 vectors, 384-d (1,500 examples), each ``normalise(centre + s·g)`` around a random unit
centre, g ~ N(0, I/d), s = 1.0 (as ``benchmarks/scale.py``'s clustered data); queries are fresh draws around random
centres. The engine is ``FewShotEngine(encoder=<a 384-d stand-in that never encodes>)`` fed through
``add_class(vectors=...)`` / ``predict_vectors``, so encoding is not part of any figure.

Measured (median over ``--repeats`` changes; each change adds a 3-vector class, the next one removes it):

- steady ``predict_vectors(1 query)``, and the first one after a change, with ``reject=False`` and ``reject=True``,
  for ``prototype`` (default) and ``linear``;
- throughput of ``predict_vectors`` (batches of 16, and of 256, pre-embedded queries) and of ``predict_arrays``
  (batches of 256 and 1,024; no Prediction objects), with the BLAS pools as the environment sets them and limited to
  one thread, from 1 and from 4 threads for ``--seconds`` each, while a fifth thread adds and removes a class every
  50 ms; every result is checked to be a label the engine held at some point (consistency), and every exception is
  counted.

    .venv/bin/python benchmarks/engine_latency.py            # writes benchmarks/results/engine_latency.{json,md}

Run it with nothing else busy: the figures are wall times on this machine's cores.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from fewshot import FewShotEngine
from fewshot.encoders.base import Encoder, l2_normalise

DIM, CLASSES, PER_CLASS = 384, 50, 30


class VectorsOnly(Encoder):
    """A 384-d text encoder stand-in for engines fed with vectors only (encoding is not measured here)."""

    name = "vectors-only"
    dim = DIM
    modalities = frozenset({"text"})

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        raise RuntimeError("this benchmark feeds vectors only")


def around(rng: np.random.Generator, centre: np.ndarray, n: int) -> np.ndarray:
    """(n, DIM) unit vectors scattered around a (DIM,) unit centre."""
    return l2_normalise(centre + rng.normal(size=(n, DIM)) / np.sqrt(DIM))


def build(classifier: str, seed: int = 0) -> tuple[FewShotEngine, np.ndarray, np.ndarray]:
    """An engine over CLASSES × PER_CLASS vectors, its (CLASSES, DIM) centres and 256 (256, DIM) queries."""
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.normal(size=(CLASSES, DIM)))
    eng = FewShotEngine(encoder=VectorsOnly(), classifier=classifier)
    for c in range(CLASSES):
        eng.add_class(f"class_{c}", vectors=around(rng, centres[c], PER_CLASS))
    queries = np.concatenate([around(rng, centres[c], 1) for c in rng.integers(0, CLASSES, 256)])
    return eng, centres, queries


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency_after_change(classifier: str, reject: bool, repeats: int) -> dict:
    """Median seconds of a steady 1-query prediction and of the first one after each change."""
    eng, centres, queries = build(classifier)
    rng = np.random.default_rng(1)
    q = queries[:1]
    eng.predict_vectors(q, reject=reject)        # fits everything once (and imports what the fits need)
    steady, first = [], []
    for r in range(repeats):
        steady.append(statistics.median(timed(lambda: eng.predict_vectors(q, reject=reject)) for _ in range(20)))
        if r % 2 == 0:
            eng.add_class("arrival", vectors=around(rng, centres[r % CLASSES], 3))
        else:
            eng.remove_class("arrival")
        first.append(timed(lambda: eng.predict_vectors(q, reject=reject)))
    return {"classifier": classifier, "reject": reject, "repeats": repeats,
            "steady_ms": 1e3 * statistics.median(steady), "first_after_change_ms": 1e3 * statistics.median(first),
            "first_after_change_max_ms": 1e3 * max(first),
            "above_steady_ms": 1e3 * (statistics.median(first) - statistics.median(steady))}


def throughput(n_readers: int, seconds: float, batch_size: int = 16, reject: bool = False, call: str = "objects",
               blas_threads: int | None = None) -> dict:
    """Predictions per second from ``n_readers`` threads, each predicting ``batch_size`` queries per call
    (``call``: "objects" = ``predict_vectors``, "arrays" = ``predict_arrays``), while a writer thread adds / removes
    a class. ``blas_threads``: the BLAS pools limited to that many threads for the run (threadpoolctl, process-wide:
    this script owns its process), else as the environment leaves them."""
    eng, centres, queries = build("prototype")
    queries = np.concatenate([queries] * max(1, -(-batch_size // len(queries))))   # ≥ batch_size rows
    eng.predict_vectors(queries[:batch_size], reject=reject)
    known = set(eng.classes) | {"arrival"}
    stop = threading.Event()
    counts = [0] * n_readers
    errors: list[str] = []
    inconsistent = [0]
    changes = [0]

    def reader(i: int) -> None:
        rng = np.random.default_rng(100 + i)
        while not stop.is_set():
            batch = queries[rng.integers(0, len(queries), batch_size)]
            try:
                if call == "arrays":
                    result = eng.predict_arrays(batch, reject=reject)
                    index = result.label_index    # labels are read through the classes the batch was predicted with
                    inconsistent[0] += int(((index < -1) | (index >= len(result.classes)) |
                                            ((index == -1) & (not reject))).sum()) + \
                        len(result) * (not set(result.classes) <= known)
                    counts[i] += len(result)
                    continue
                preds = eng.predict_vectors(batch, reject=reject)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            inconsistent[0] += sum(p.label not in known and not (reject and p.label is None) for p in preds)
            counts[i] += len(preds)

    def writer() -> None:
        rng = np.random.default_rng(7)
        while not stop.is_set():
            try:
                if "arrival" in eng.classes:
                    eng.remove_class("arrival")
                else:
                    eng.add_class("arrival", vectors=around(rng, centres[0], 3))
                changes[0] += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(f"writer {type(exc).__name__}: {exc}")
            stop.wait(0.05)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(n_readers)]
    threads.append(threading.Thread(target=writer))
    with contextlib.ExitStack() as scope:
        if blas_threads is not None:
            scope.enter_context(threadpool_limits(limits=blas_threads, user_api="blas"))
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(60)
        wall = time.perf_counter() - t0
    return {"readers": n_readers, "batch_size": batch_size, "reject": reject, "call": call,
            "blas_threads": blas_threads, "seconds": round(wall, 2), "predictions": sum(counts),
            "per_second": sum(counts) / wall, "changes": changes[0], "errors": len(errors),
            "error_examples": errors[:3], "inconsistent": inconsistent[0]}


def markdown(payload: dict) -> str:
    lines = ["# Engine latency after a change, and parallel reads", "",
             f"Written by `benchmarks/engine_latency.py` on {payload['machine']} ({payload['cpus']} CPUs), load "
             f"average before / after: {payload['load_before']} / {payload['load_after']}. Support: "
             f"{CLASSES} classes × {PER_CLASS} vectors, {DIM}-d; one query per prediction; medians over the changes. "
             f"OPENBLAS_NUM_THREADS={payload['OPENBLAS_NUM_THREADS']}.", "",
             "| classifier | reject | steady ms | first after a change ms (max) | above steady ms | target |",
             "|---|---|---:|---:|---:|---|"]
    for r in payload["latency"]:
        target = "≤ 5 ms above steady" if not r["reject"] else ("≤ 300 ms" if r["classifier"] == "linear" else "")
        lines.append(f"| {r['classifier']} | {r['reject']} | {r['steady_ms']:.2f} | {r['first_after_change_ms']:.1f} "
                     f"({r['first_after_change_max_ms']:.1f}) | {r['above_steady_ms']:.1f} | {target} |")
    lines += ["", "| call | BLAS threads | queries per call | reject | reader threads | predictions / s | × 1 thread | "
              "class changes | errors | inconsistent labels |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]

    def setting(r: dict) -> tuple:
        return r.get("call", "objects"), r.get("blas_threads"), r.get("batch_size", 16), r.get("reject", False)

    for r in payload["throughput"]:
        base = next(b["per_second"] for b in payload["throughput"] if setting(b) == setting(r))
        call, blas, size, reject = setting(r)
        lines.append(f"| {'predict_arrays' if call == 'arrays' else 'predict_vectors'} | "
                     f"{blas if blas is not None else 'as set'} | {size} | {reject} | {r['readers']} | "
                     f"{r['per_second']:.0f} | {r['per_second'] / base:.2f} | {r['changes']} | {r['errors']} | "
                     f"{r['inconsistent']} |")
    lines += ["", "Target: 4 reader threads ≥ 1.6x the throughput of 1, with 0 errors, while the writer runs. A call "
              "that spends most of its time in Python (the interpreter lock held) cannot run in parallel whatever "
              "the engine's lock does (building the Prediction objects is Python; `predict_arrays` builds none); "
              "open-set calls (reject=True) spend theirs in numpy's linear algebra, which releases it. BLAS "
              "threads \"as set\": what OPENBLAS_NUM_THREADS (above) leaves, 1: limited with threadpoolctl for the "
              "run — concurrent callers of a multi-threaded OpenBLAS queue on its one pool."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_latency.json"))
    args = ap.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    latency = [latency_after_change(c, reject, args.repeats)
               for c in ("prototype", "linear") for reject in (False, True)]
    plan = [("objects", None, 16, False), ("objects", None, 256, False), ("objects", None, 16, True),
            ("arrays", None, 1024, False), ("objects", 1, 256, False), ("arrays", 1, 256, False),
            ("arrays", 1, 1024, False)]
    tput = [throughput(n, args.seconds, size, reject, call, blas) for call, blas, size, reject in plan
            for n in (1, 4)]
    payload = {"machine": platform.machine(), "cpus": os.cpu_count(), "load_before": load_before,
               "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
               "load_after": [round(x, 2) for x in os.getloadavg()], "latency": latency, "throughput": tput}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(payload), encoding="utf-8")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
