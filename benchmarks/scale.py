"""Scale benchmark: 1,000,000 support vectors × 384-d across 10,000 classes, through ``fewshot.index.support_index.SupportIndex``
and ``FewShotEngine``, for the three index types (exact ``flat``, ``hnsw``, ``ivfpq``).

Data (``--data clustered``, the default): 10,000 random unit class centres; each class gets 100 support vectors
``normalise(centre + s·g)``, g ~ N(0, I/d), s = 1 (cosine to the centre ≈ 0.71, within-class cosine ≈ 0.5,
between-class ≈ 0), i.e. roughly how sentence embeddings of one intent scatter. Queries are fresh draws around
random centres. ``--data random`` uses i.i.d. random unit vectors (the hardest case for approximate search: all
neighbours nearly equidistant). The vectors are added in a random interleaved order (not class by class).

Measured, per index type: build time (and through which API), resident memory added by the built index (RSS
delta, psutil), query latency for batches of 100 and for single queries, recall@10 of the ids against exact
search, adding / removing one 100-example class (and proof that the FAISS object is the same one, i.e. no
rebuild), engine save and reload time (checksummed, atomic save) with identical predictions after reload.
Prototype classification over the 10,000 classes: ``FewShotEngine.predict_vectors(top_k=5)`` in batches of
256. An HNSW build that would run past ``--hnsw-time-cap`` stops early and reports how far it got.

    .venv/bin/python benchmarks/scale.py                       # full run, writes benchmarks/results/scale.{json,md}
    .venv/bin/python benchmarks/scale.py --n 100000 --classes 1000 --out /tmp/scale_small.json   # quick look
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads OpenMP: spinning threads on a busy box
import faiss  # noqa: E402
import numpy as np  # noqa: E402
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fewshot import FewShotEngine  # noqa: E402
from fewshot.encoders.base import Encoder  # noqa: E402
from fewshot.index.support_index import SupportIndex  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class VectorsOnly(Encoder):
    """The engine's encoder slot for precomputed vectors (the benchmark never encodes)."""

    modalities = frozenset({"text"})

    def __init__(self, dim: int):
        self.name, self.dim = "vectors-only", dim

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        raise RuntimeError("the scale benchmark passes vectors, not texts")


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, n_classes: int, dim: int, n_queries: int, kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n // n_classes)
    labels = labels[rng.permutation(len(labels))]          # interleaved insertion order
    x = np.empty((len(labels), dim), np.float32)
    q_labels = rng.integers(0, n_classes, n_queries)
    if kind == "clustered":
        centres = unit(rng.standard_normal((n_classes, dim), dtype=np.float32))
        for s in range(0, len(x), 100_000):
            g = rng.standard_normal((min(100_000, len(x) - s), dim), dtype=np.float32) / np.sqrt(dim)
            x[s:s + len(g)] = unit(centres[labels[s:s + len(g)]] + g)
        q = unit(centres[q_labels] + rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim))
    else:
        for s in range(0, len(x), 100_000):
            x[s:s + 100_000] = unit(rng.standard_normal((min(100_000, len(x) - s), dim), dtype=np.float32))
        q = unit(rng.standard_normal((n_queries, dim), dtype=np.float32))
    return x, labels, q, q_labels


def recall_at(found: np.ndarray, truth: np.ndarray, row_of_id: np.ndarray) -> float:
    found = np.where(found >= 0, row_of_id[np.maximum(found, 0)], -1)
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) / truth.shape[1]
                          for f, t in zip(found, truth)]))


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def latency(index: SupportIndex, q: np.ndarray, k: int = 10) -> dict:
    index.search(q[:10], k)  # warm-up
    _, t_batch = timed(lambda: [index.search(q[s:s + 100], k) for s in range(0, len(q), 100)])
    single = q[:50]
    _, t_single = timed(lambda: [index.search(single[i:i + 1], k) for i in range(len(single))])
    return {"batch100_ms_per_query": 1000 * t_batch / len(q), "single_query_ms": 1000 * t_single / len(single)}


def add_remove(index: SupportIndex, dim: int, repeats: int = 5) -> dict:
    rng = np.random.default_rng(7)
    obj, n0 = index.faiss_index, len(index)
    adds, removes = [], []
    for r in range(repeats):
        v = unit(rng.standard_normal((100, dim), dtype=np.float32))
        t = time.perf_counter()
        index.add_class(f"__new{r}")
        index.add_vectors(f"__new{r}", v)
        adds.append(time.perf_counter() - t)
        assert len(index) == n0 + 100
        t = time.perf_counter()
        index.remove_class(f"__new{r}")
        removes.append(time.perf_counter() - t)
        assert len(index) == n0
    return {"add_class_100_vectors_ms_median": 1000 * float(np.median(adds)),
            "remove_class_100_vectors_ms_median": 1000 * float(np.median(removes)),
            "faiss_object_unchanged_no_rebuild": index.faiss_index is obj}


def save_reload(index: SupportIndex, dim: int, q: np.ndarray, workdir: Path) -> dict:
    eng = FewShotEngine(VectorsOnly(dim))
    eng.index = index
    eng._dirty = True
    before = eng.predict_vectors(q[:100], top_k=5)
    out = workdir / f"engine-{index.index_type}"
    _, t_save = timed(eng.save, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    loaded, t_load = timed(FewShotEngine.load, out, encoder=VectorsOnly(dim))
    after = loaded.predict_vectors(q[:100], top_k=5)
    same = [p.top_k for p in before] == [p.top_k for p in after] or \
        all([l for l, _ in a.top_k] == [l for l, _ in b.top_k] for a, b in zip(before, after))
    del loaded
    shutil.rmtree(out, ignore_errors=True)
    return {"save_s": t_save, "load_s": t_load, "saved_mb": size / 2**20, "same_predictions_after_reload": same}


def build(index_type: str, x: np.ndarray, labels: np.ndarray, n_classes: int, api: str, time_cap: float | None,
          **opts) -> tuple[SupportIndex, dict]:
    names = [f"class{c:05d}" for c in range(n_classes)]
    m0 = rss_mb()
    t0 = time.perf_counter()
    index = SupportIndex(x.shape[1], index_type, **opts)
    for n in names:
        index.add_class(n)
    info: dict = {"api": api}
    built = len(x)
    index.row_of_id = np.arange(len(x))  # faiss id → row of x (for recall against exact search)
    if api == "add_vectors per class":
        order = np.argsort(labels, kind="stable")
        index.row_of_id = order
        bounds = np.searchsorted(labels[order], np.arange(n_classes + 1))
        for c in range(n_classes):
            index.add_vectors(names[c], x[order[bounds[c]:bounds[c + 1]]])
    else:
        chunk = 50_000
        for s in range(0, len(x), chunk):
            index.add_many([names[c] for c in labels[s:s + chunk]], x[s:s + chunk])
            if time_cap is not None and time.perf_counter() - t0 > time_cap and s + chunk < len(x):
                built = s + chunk
                info["stopped_early"] = f"build stopped after {built} vectors at the {time_cap:.0f} s time cap"
                break
            if s % 200_000 == 0:
                print(f"  {index_type}: {s + chunk} vectors in {time.perf_counter() - t0:.0f} s", flush=True)
    info["build_s"] = time.perf_counter() - t0
    info["vectors"] = built
    info["vectors_per_s"] = built / info["build_s"]
    info["rss_added_mb"] = rss_mb() - m0
    return index, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--data", choices=["clustered", "random"], default="clustered")
    ap.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--hnsw-ef-construction", type=int, default=40)
    ap.add_argument("--hnsw-time-cap", type=float, default=420.0, help="seconds; stop the HNSW build there")
    ap.add_argument("--ivf-nlist", type=int, default=1024)
    ap.add_argument("--ivf-train", type=int, default=40_000)
    ap.add_argument("--types", nargs="+", default=["flat", "ivfpq", "hnsw"])
    ap.add_argument("--out", default=str(RESULTS / "scale.json"))
    ap.add_argument("--merge", action="store_true", help="update only the --types run in an existing --out file")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {"config": {**vars(args), "faiss": faiss.__version__, "numpy": np.__version__,
                            "cpu_count": os.cpu_count(), "machine": platform.platform(),
                            "cpu": platform.processor() or platform.machine(),
                            "load_average_at_start": os.getloadavg()}, "indexes": {}}
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        res["indexes"] = old.get("indexes", {})
        res["prototype"] = old.get("prototype")
        res["runs"] = old.get("runs", [old["config"]])
        res["runs"].append(res["config"])

    def flush() -> None:
        out.write_text(json.dumps(res, indent=1))
        out.with_suffix(".md").write_text(markdown(res))

    t0 = time.perf_counter()
    x, labels, q, q_labels = make_data(args.n, args.classes, args.dim, args.queries, args.data)
    res["data_s"] = time.perf_counter() - t0
    print(f"data {x.shape} in {res['data_s']:.1f} s", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="fewshot-scale-", dir=os.environ.get("SCALE_TMP")))
    truth = None
    try:
        for index_type in args.types:
            if index_type == "flat":
                index, info = build("flat", x, labels, args.classes, "add_vectors per class", None)
            elif index_type == "ivfpq":
                index, info = build("ivfpq", x, labels, args.classes, "add_many, 50k chunks", None,
                                    ivf_nlist=args.ivf_nlist, train_size=args.ivf_train)
                info["train_s"] = index.train_seconds
                info["trained_on_first"] = args.ivf_train
                info["nlist"], info["pq_m"], info["pq_nbits"] = args.ivf_nlist, index.pq_m, index.pq_nbits
            else:
                index, info = build("hnsw", x, labels, args.classes, "add_many, 50k chunks", args.hnsw_time_cap,
                                    hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction)
                info["hnsw_m"], info["ef_construction"] = args.hnsw_m, args.hnsw_ef_construction
            print(f"{index_type}: built {info['vectors']} in {info['build_s']:.1f} s", flush=True)
            if truth is None or len(truth[0]) != info["vectors"]:  # exact top-10 ids over what was built
                gt = faiss.IndexFlatIP(args.dim)
                gt.add(x[:info["vectors"]])
                _, ids = gt.search(q, 10)
                truth = (np.arange(info["vectors"]), ids)
                del gt
            base = index.faiss_index
            if index_type == "hnsw":
                sweep = {}
                for ef in (32, 64, 128, 256):
                    index.hnsw_ef_search = ef
                    _, ids = base.search(q, 10, params=faiss.SearchParametersHNSW(efSearch=ef))
                    sweep[f"efSearch={ef}"] = recall_at(ids, truth[1], index.row_of_id)
                info["recall@10_sweep"] = sweep
                index.hnsw_ef_search = 128
                info["recall@10"] = sweep["efSearch=128"]
            elif index_type == "ivfpq":
                sweep = {}
                for nprobe in (8, 32, 128):
                    base.nprobe = nprobe
                    _, ids = base.search(q, 10)
                    sweep[f"nprobe={nprobe}"] = recall_at(ids, truth[1], index.row_of_id)
                base.nprobe = 32
                info["recall@10_sweep"] = sweep
                info["recall@10"] = sweep["nprobe=32"]
            else:
                _, ids = base.search(q, 10)
                info["recall@10"] = recall_at(ids, truth[1], index.row_of_id)
            info["query_latency"] = latency(index, q)
            print(f"{index_type}: recall@10 {info['recall@10']:.3f} {info['query_latency']}", flush=True)
            if index_type == "flat":
                eng = FewShotEngine(VectorsOnly(args.dim))
                eng.index = index
                _, fit_s = timed(eng.predict_vectors, q[:1], top_k=5)   # fits 10k prototypes
                t = time.perf_counter()
                preds = [p for s in range(0, len(q), 256) for p in eng.predict_vectors(q[s:s + 256], top_k=5)]
                per_q = 1000 * (time.perf_counter() - t) / len(q)
                acc = float(np.mean([p.label == f"class{c:05d}" for p, c in zip(preds, q_labels)]))
                res["prototype"] = {"classes": args.classes, "batch": 256, "top_k": 5,
                                    "ms_per_query": per_q, "fit_after_change_s": fit_s, "top1_accuracy": acc,
                                    "target_ms_per_query": 1.0, "meets_target": per_q <= 1.0}
                print(f"prototype top-5: {per_q:.3f} ms/query", flush=True)
                del eng
            info["add_remove_one_class"] = add_remove(index, args.dim)
            info["save_reload"] = save_reload(index, args.dim, q, workdir)
            print(f"{index_type}: {info['add_remove_one_class']} {info['save_reload']}", flush=True)
            res["indexes"][index_type] = info
            flush()
            del index, base
            gc.collect()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res["total_s"] = time.perf_counter() - t0
    flush()
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def markdown(res: dict) -> str:
    c = res["config"]
    lines = [f"# Scale benchmark: {c['n']:,} × {c['dim']}-d support vectors, {c['classes']:,} classes "
             f"({c['data']} data)", "",
             f"faiss {c['faiss']}, {c['threads']} faiss threads on a {c['cpu_count']}-core machine "
             f"({c['machine']}), load average at start {tuple(round(v, 1) for v in c['load_average_at_start'])} "
             "(shared with other jobs: absolute times are pessimistic). Command: "
             "`.venv/bin/python benchmarks/scale.py` (see its docstring for the data).", "",
             "| index | build API | vectors | build s | RSS added MB | recall@10 | ms/query (batch 100) | "
             "ms single query | add class ms | remove class ms | no rebuild | save s | load s | saved MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, i in res["indexes"].items():
        ar, sr, ql = i.get("add_remove_one_class", {}), i.get("save_reload", {}), i.get("query_latency", {})
        lines.append(f"| {name} | {i['api']} | {i['vectors']:,} | {i['build_s']:.1f} | {i['rss_added_mb']:.0f} | "
                     f"{i.get('recall@10', float('nan')):.3f} | {ql.get('batch100_ms_per_query', float('nan')):.3f} | "
                     f"{ql.get('single_query_ms', float('nan')):.2f} | "
                     f"{ar.get('add_class_100_vectors_ms_median', float('nan')):.1f} | "
                     f"{ar.get('remove_class_100_vectors_ms_median', float('nan')):.1f} | "
                     f"{ar.get('faiss_object_unchanged_no_rebuild')} | {sr.get('save_s', float('nan')):.1f} | "
                     f"{sr.get('load_s', float('nan')):.1f} | {sr.get('saved_mb', float('nan')):.0f} |")
    lines.append("")
    for name, i in res["indexes"].items():
        if "recall@10_sweep" in i:
            lines.append(f"- {name} recall@10 sweep: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                   i["recall@10_sweep"].items()))
        if "stopped_early" in i:
            lines.append(f"- {name}: {i['stopped_early']} (recall measured against exact search over the same "
                         "vectors)")
        if name == "hnsw":
            lines.append(f"- hnsw: M={i['hnsw_m']}, efConstruction={i['ef_construction']}, efSearch=128 for "
                         "latency")
        if name == "ivfpq":
            lines.append(f"- ivfpq: nlist={i['nlist']}, {i['pq_m']} × {i['pq_nbits']}-bit PQ codes, trained on "
                         f"the first {i['trained_on_first']:,} vectors added, nprobe=32 for latency")
    if res.get("prototype"):
        p = res["prototype"]
        lines += ["", f"Prototype classification over {p['classes']:,} classes, `predict_vectors(top_k=5)` in "
                  f"batches of {p['batch']}: **{p['ms_per_query']:.3f} ms per query** (target ≤ 1 ms: "
                  f"{'met' if p['meets_target'] else 'NOT met'}); refit of all prototypes after a change "
                  f"{p['fit_after_change_s']:.2f} s; top-1 accuracy on held-out queries {p['top1_accuracy']:.3f}."]
    if len(res.get("runs", [])) > 1:
        lines += ["", "Assembled from several runs (`--merge`): " + "; ".join(
            f"`--types {' '.join(r['types'])}` at load {tuple(round(v, 1) for v in r['load_average_at_start'])}"
            for r in res["runs"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
