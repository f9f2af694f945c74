"""ONNX vs torch, measured in one run on the same inputs (issue 4).

    python benchmarks/bench_onnx.py [--out benchmarks/results] [--quick]

Text (MiniLM, Banking77): sentence-transformers on torch vs ONNX fp32 vs ONNX int8 —
  * parity: fp32 (and int8) cosine to torch on every Banking77 test sentence;
  * accuracy: Banking77 10-shot, prototype classifier, all 3080 test sentences, support and queries encoded by
    each backend, mean over seeds;
  * throughput at batch 64 (rounds interleaved across backends, median round reported);
  * single-input latency of encode + classify against a 77-class engine (queries interleaved across backends);
  * cold start: a new process, from before `import fewshot` to the first prediction of a saved engine (torch
    engine vs portable fp32 / int8 engines loaded with torch blocked from import), and its peak RSS after
    encoding 256 sentences at batch 64.
Images (effnet-lite0, Omniglot evaluation set): torch vs ONNX fp32 throughput at batch 32 and cosine parity.

Writes <out>/onnx.json and <out>/onnx.md. The machine is shared; numbers are what this run measured.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FEWSHOT_SHARED_DATA", REPO.parent / "shared" / "data"))
BLOCKED = ("torch", "torchvision", "transformers", "sentence_transformers", "open_clip", "timm")


def read_banking(split: str) -> tuple[list[str], list[str]]:
    with open(DATA / "text" / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def cold_start(engine_dir: Path, block_torch: bool, texts: list[str]) -> dict:
    """New process: time from before `import fewshot` to the first prediction, then peak RSS after a batch."""
    blocker = "" if not block_torch else f"""
import importlib.abc
class _B(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, _B())
"""
    code = f"""
import sys, time, json, resource
t0 = time.perf_counter()
{blocker}
from fewshot import FewShotEngine
eng = FewShotEngine.load({str(engine_dir)!r})
label = eng.predict([{texts[0]!r}])[0].label
t1 = time.perf_counter()
eng.encoder.encode_text(json.loads({json.dumps(json.dumps(texts))}), batch_size=64)
try:  # VmHWM is this process's own peak (ru_maxrss would carry over the parent's across exec)
    rss = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')][0] / 1024
except (OSError, IndexError):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"import_to_first_prediction_s": t1 - t0, "peak_rss_mib": rss, "label": label,
                  "torch_imported": "torch" in sys.modules}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--throughput-texts", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and onnxruntime alike (default: each library's default)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.throughput_texts, args.rounds, args.latency_queries, args.seeds, args.images, args.cold_runs = \
            128, 1, 20, 1, 32, 1

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:  # same thread budget for both runtimes, here and in the cold-start processes
        os.environ["FEWSHOT_ONNX_THREADS"] = str(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from fewshot.classifiers import ArraySupport, PrototypeClassifier
    from fewshot.encoders import load_encoder
    from fewshot.encoders.cache import cached_encode
    from fewshot.engine.engine import FewShotEngine

    work = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    results: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                                 "cpus": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                                 "torch": torch.__version__, "load_average_start": os.getloadavg()},
                     "config": vars(args)}
    try:
        train_texts, train_labels = read_banking("train")
        test_texts, test_labels = read_banking("test")
        classes = sorted(set(train_labels))
        print(f"banking77: {len(train_texts)} train, {len(test_texts)} test, {len(classes)} classes", flush=True)

        # ---- encoders: torch, and the portable engines' ONNX exports (the product path) ----------------------
        st = load_encoder("minilm", device="cpu")
        rng = np.random.default_rng(0)
        shot_idx = {c: rng.choice([i for i, lab in enumerate(train_labels) if lab == c], 10, replace=False)
                    for c in classes}
        support_texts = [train_texts[i] for c in classes for i in shot_idx[c]]
        support_vecs = cached_encode(st, support_texts)
        engine = FewShotEngine(encoder=st)
        for k, c in enumerate(classes):
            engine.add_class(c, vectors=support_vecs[10 * k:10 * (k + 1)])
        engine.save(work / "engine-torch")
        t = time.perf_counter()
        engine.save(work / "engine-fp32", portable=True)
        export_fp32_s = time.perf_counter() - t
        t = time.perf_counter()
        engine.save(work / "engine-int8", portable=True, quantize="int8")
        export_int8_s = time.perf_counter() - t
        engines = {"torch": engine, "onnx-fp32": FewShotEngine.load(work / "engine-fp32"),
                   "onnx-int8": FewShotEngine.load(work / "engine-int8")}
        encoders = {k: e.encoder for k, e in engines.items()}
        onnx_threads = encoders["onnx-fp32"].threads
        results["machine"]["onnx_threads"] = onnx_threads
        sizes = {k: sum(p.stat().st_size for p in (work / f"engine-{k[5:]}").rglob("*.onnx")) / 2**20
                 for k in ("onnx-fp32", "onnx-int8")}
        results["export"] = {"fp32_seconds": export_fp32_s, "int8_seconds": export_int8_s,
                             "model_mib": sizes, "int8_scheme": encoders["onnx-int8"].quantize_scheme}
        print(f"exported: fp32 {export_fp32_s:.1f}s int8 {export_int8_s:.1f}s, sizes {sizes}", flush=True)

        # ---- parity on every test sentence ---------------------------------------------------------------------
        ref = cached_encode(st, test_texts)
        parity = {}
        test_vecs = {"torch": ref}
        for k in ("onnx-fp32", "onnx-int8"):
            test_vecs[k] = encoders[k].encode_text(test_texts, batch_size=64)
            cos = (test_vecs[k] * ref).sum(1)
            parity[k] = {"n": len(cos), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                         "n_below_0.999": int((cos < 0.999).sum())}
        results["parity"] = parity
        print("parity", parity, flush=True)

        # ---- Banking77 10-shot accuracy (prototype), support + queries encoded by each backend ------------------
        acc: dict[str, list[float]] = {k: [] for k in encoders}
        y_test = np.asarray([classes.index(lab) for lab in test_labels])
        for seed in range(args.seeds):
            r = np.random.default_rng(100 + seed)
            idx = [i for c in classes for i in r.choice([j for j, lab in enumerate(train_labels) if lab == c], 10,
                                                         replace=False)]
            y_sup = np.repeat(np.arange(len(classes)), 10)
            texts = [train_texts[i] for i in idx]
            for k, enc in encoders.items():
                sup = cached_encode(enc, texts) if k == "torch" else enc.encode_text(texts, batch_size=64)
                clf = PrototypeClassifier().fit(ArraySupport(sup, y_sup, n_classes=len(classes)))
                acc[k].append(float((clf.scores(test_vecs[k]).argmax(1) == y_test).mean()))
        results["accuracy_10shot"] = {k: {"mean": float(np.mean(v)), "per_seed": v} for k, v in acc.items()}
        results["accuracy_10shot"]["int8_cost_points"] = 100 * (np.mean(acc["torch"]) - np.mean(acc["onnx-int8"]))
        results["accuracy_10shot"]["fp32_cost_points"] = 100 * (np.mean(acc["torch"]) - np.mean(acc["onnx-fp32"]))
        print("accuracy", results["accuracy_10shot"], flush=True)

        # ---- throughput at batch 64 (interleaved rounds) -------------------------------------------------------
        sample = test_texts[:args.throughput_texts]
        for enc in encoders.values():
            enc.encode_text(sample[:64], batch_size=64)  # warm-up
        rounds: dict[str, list[float]] = {k: [] for k in encoders}
        for _ in range(args.rounds):
            for k, enc in encoders.items():
                rounds[k].append(len(sample) / timed(enc.encode_text, sample, batch_size=64))
        tp = {k: {"median_per_s": statistics.median(v), "rounds_per_s": v} for k, v in rounds.items()}
        for k in ("onnx-fp32", "onnx-int8"):
            tp[k]["speedup_vs_torch"] = tp[k]["median_per_s"] / tp["torch"]["median_per_s"]
        results["throughput_batch64"] = {"n_texts": len(sample), **tp}
        print("throughput", {k: round(v["median_per_s"], 1) for k, v in tp.items()}, flush=True)

        # ---- single-input latency: encode + classify against the 77-class engine -------------------------------
        queries = test_texts[::max(1, len(test_texts) // args.latency_queries)][:args.latency_queries]
        for eng in engines.values():
            eng.predict(queries[:5])
        lat: dict[str, list[float]] = {k: [] for k in engines}
        agree = {k: 0 for k in engines}
        torch_label = {q: engines["torch"].predict_vectors(test_vecs["torch"][test_texts.index(q)][None])[0].label
                       for q in queries}
        for q in queries:
            for k, eng in engines.items():
                t = time.perf_counter()
                label = eng.predict([q])[0].label
                lat[k].append(1000 * (time.perf_counter() - t))
                agree[k] += label == torch_label[q]
        results["latency_ms"] = {k: {"p50": pct(v, 50), "p95": pct(v, 95), "n": len(v),
                                     "same_label_as_torch": agree[k] / len(queries)} for k, v in lat.items()}
        print("latency", {k: (round(v["p50"], 2), round(v["p95"], 2)) for k, v in results["latency_ms"].items()},
              flush=True)

        # ---- cold start + peak memory, new processes -----------------------------------------------------------
        cold: dict[str, list[dict]] = {k: [] for k in engines}
        for _ in range(args.cold_runs):
            for k in engines:
                cold[k].append(cold_start(work / f"engine-{k.replace('onnx-', '')}", k != "torch", test_texts[:256]))
        results["cold_start"] = {k: {"import_to_first_prediction_s": statistics.median(
            r["import_to_first_prediction_s"] for r in v), "process_wall_s": statistics.median(
            r["process_wall_s"] for r in v), "peak_rss_mib": max(r["peak_rss_mib"] for r in v),
            "torch_imported": any(r["torch_imported"] for r in v), "runs": v} for k, v in cold.items()}
        print("cold", {k: round(v["import_to_first_prediction_s"], 2) for k, v in results["cold_start"].items()},
              flush=True)

        # ---- images: effnet-lite0 torch vs ONNX fp32 -----------------------------------------------------------
        from PIL import Image

        from fewshot.encoders.onnx import load_onnx
        from fewshot.export.onnx_export import export_encoder

        with np.load(DATA / "images" / "omniglot" / "images_evaluation.npz") as z:
            arr = z["images"]
        flat = arr.reshape(-1, 105, 105)
        pick = np.random.default_rng(0).choice(len(flat), args.images, replace=False)
        images = [Image.fromarray(flat[i].astype(np.uint8) * 255) for i in pick]
        eff = load_encoder("effnet-lite0", device="cpu")
        export_encoder(eff, work / "effnet-fp32")
        eff_onnx = load_onnx(str(work / "effnet-fp32"))
        img_enc = {"torch": eff, "onnx-fp32": eff_onnx}
        for enc in img_enc.values():
            enc.encode_images(images[:8], batch_size=8, show_progress_bar=False)
        img_rounds: dict[str, list[float]] = {k: [] for k in img_enc}
        vecs = {}
        for _ in range(max(1, args.rounds - 1)):
            for k, enc in img_enc.items():
                t = time.perf_counter()
                vecs[k] = enc.encode_images(images, batch_size=32, show_progress_bar=False)
                img_rounds[k].append(len(images) / (time.perf_counter() - t))
        cos = (vecs["torch"] * vecs["onnx-fp32"]).sum(1)
        results["images_effnet_lite0"] = {
            "n_images": len(images), **{k: {"median_per_s": statistics.median(v), "rounds_per_s": v}
                                        for k, v in img_rounds.items()},
            "speedup_vs_torch": statistics.median(img_rounds["onnx-fp32"]) / statistics.median(img_rounds["torch"]),
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
        print("images", {k: v for k, v in results["images_effnet_lite0"].items() if k != "torch"}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results["machine"]["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "onnx-quick" if args.quick else "onnx"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
    return 0


def markdown(r: dict) -> str:
    m, tp, lat, cold, acc, par, im = (r["machine"], r["throughput_batch64"], r["latency_ms"], r["cold_start"],
                                       r["accuracy_10shot"], r["parity"], r["images_effnet_lite0"])
    rows = ["| backend | batch-64 throughput (sent/s) | × torch | p50 / p95 latency, encode+classify (ms) | "
            "cold start, import → 1st prediction (s) | peak RSS (MiB) | Banking77 10-shot acc. | "
            "cosine to torch (min / mean, 3080 test) |",
            "|---|---|---|---|---|---|---|---|"]
    for k in ("torch", "onnx-fp32", "onnx-int8"):
        ratio = tp[k].get("speedup_vs_torch", 1.0)
        cos = "—" if k == "torch" else f"{par[k]['min_cosine']:.5f} / {par[k]['mean_cosine']:.5f}"
        rows.append(f"| {k} | {tp[k]['median_per_s']:.0f} | {ratio:.2f} | {lat[k]['p50']:.2f} / {lat[k]['p95']:.2f}"
                    f" | {cold[k]['import_to_first_prediction_s']:.2f} | {cold[k]['peak_rss_mib']:.0f} | "
                    f"{100 * acc[k]['mean']:.2f} % | {cos} |")
    return "\n".join([
        "# ONNX vs torch (MiniLM on Banking77; EfficientNet-Lite0 on Omniglot)", "",
        f"Generated by `python benchmarks/bench_onnx.py`. Machine: {m['cpus']} CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} threads, onnxruntime with {m['onnx_threads']} intra-op threads. All rows measured "
        "in the same run on the same inputs; throughput rounds and latency queries are interleaved across "
        "backends. The machine was shared with other jobs (load average "
        f"{m['load_average_start'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end on {m['cpus']} CPUs), "
        "so absolute numbers are noisy; the ratios are the fairer reading.", "",
        *rows, "",
        f"- Export: fp32 {r['export']['model_mib']['onnx-fp32']:.1f} MiB, int8 "
        f"{r['export']['model_mib']['onnx-int8']:.1f} MiB (int8 scheme "
        f"`{r['export'].get('int8_scheme', 'dynamic-per-batch')}`; see benchmarks/onnx_peers.py for the "
        "comparison with sentence-transformers' own ONNX backends).",
        f"- int8 accuracy cost: {acc['int8_cost_points']:.2f} points (fp32: {acc['fp32_cost_points']:.2f}); "
        f"10 shots per class, prototype classifier, all 3080 test sentences, mean of {len(acc['torch']['per_seed'])}"
        " seeds.",
        f"- fp32 parity: {par['onnx-fp32']['n_below_0.999']} of {par['onnx-fp32']['n']} test sentences below "
        "cosine 0.999.",
        f"- Cold start runs in a new process; the ONNX engines are portable saves loaded with torch blocked from "
        f"import (torch imported: {cold['onnx-int8']['torch_imported']}). Process wall time incl. interpreter: "
        + ", ".join(f"{k} {v['process_wall_s']:.2f} s" for k, v in cold.items()) + ".",
        f"- Images, effnet-lite0, {im['n_images']} Omniglot images, batch 32: torch {im['torch']['median_per_s']:.1f}"
        f" img/s, ONNX fp32 {im['onnx-fp32']['median_per_s']:.1f} img/s ({im['speedup_vs_torch']:.2f}×); cosine "
        f"min {im['min_cosine']:.6f}.", ""])


if __name__ == "__main__":
    raise SystemExit(main())
