"""Corpus-scale classify (issue 18): ``fewshot batch`` streaming vs on Ray Data with 1 and 2 workers.

Corpus: ``--rows`` short texts (default 100,000) cycled from the Banking77 test set, CLINC150 (every split) and the
StackOverflow titles in ../shared/data, written as ``--files`` CSV files (with an id column). Engine: MiniLM with
10 Banking77 training examples per class (77 classes), saved portable (ONNX, ``--quantize int8`` by default, or
``none`` for fp32). Each mode runs in a fresh process:

- ``streaming``: ``classify_files`` in one process on 1 ONNX thread (``FEWSHOT_ONNX_THREADS=1``): the per-core
  rate; its peak RSS (VmHWM) is the memory figure;
- ``ray-1`` / ``ray-2``: a local Ray started first (its start is reported apart), then ``classify_files(ray=True,
  workers=k)``: 1 intra-op thread per worker.

Rates are rows / job seconds (the job: checking the inputs, loading the engine in each worker, classifying,
writing, publishing). Targets: ray-2 >= 1.6x ray-1; ray-1 at most 15% slower than streaming; streaming RSS < 1 GiB.
The 100M-row note scales the measured per-core rate on Ray (the 2-worker rate / 2) to N nodes of ``--node-cores``
cores at ``--usd-per-core-hour``.

    .venv/bin/python benchmarks/batch_ray.py                   # writes benchmarks/results/batch_ray.{json,md}
    .venv/bin/python benchmarks/batch_ray.py --rows 2000 --out /tmp/batch_smoke   # a smoke run

Run it with nothing else busy: the figures are wall times on this machine's cores.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FEWSHOT_SHARED_DATA", REPO.parent / "shared" / "data")) / "text"
MODES = ("streaming", "ray-1", "ray-2")


def corpus_texts() -> list[str]:
    """Short real texts: Banking77 test, CLINC150 (all splits), StackOverflow titles."""
    with open(DATA / "banking77" / "test.csv", newline="", encoding="utf-8") as f:
        texts = [r["text"] for r in csv.DictReader(f)]
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    texts += [text for split in clinc.values() for text, _ in split]
    texts += (DATA / "stackoverflow" / "title_StackOverflow.txt").read_text(encoding="utf-8").splitlines()
    return [t.strip() for t in texts if t.strip()]


def write_corpus(folder: Path, rows: int, files: int) -> list[Path]:
    texts = corpus_texts()
    paths = []
    per_file = -(-rows // files)
    for k in range(files):
        path = folder / f"corpus-{k:02d}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            for i in range(k * per_file, min(rows, (k + 1) * per_file)):
                writer.writerow([f"r{i}", texts[i % len(texts)]])
        paths.append(path)
    return paths


def build_engine(path: Path, quantize: str | None) -> None:
    from fewshot.engine import FewShotEngine

    by_label: dict[str, list[str]] = {}
    with open(DATA / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if len(by_label.setdefault(r["category"], [])) < 10:
                by_label[r["category"]].append(r["text"])
    engine = FewShotEngine(encoder="minilm")
    for label, texts in by_label.items():
        engine.add_class(label, examples=texts)
    engine.save(path, portable=True, quantize=quantize)


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would count the parent's peak, kept across exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, engine: str, inputs: list[str], out: str, batch_size: int) -> dict:
    """One measured run in this (fresh) process; returns its figures."""
    from fewshot.batch import classify_files

    record: dict = {"mode": mode}
    options: dict = {}
    if mode != "streaming":
        import logging

        import ray

        started = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        record["ray_start_s"] = round(time.perf_counter() - started, 2)
        options = {"ray": True, "workers": int(mode.split("-")[1]), "log_file": out + ".ray.log"}
    result = classify_files(engine, inputs, out, batch_size=batch_size, progress=False, **options)
    rss_mib = peak_rss_mib()
    record.update(rows=result.rows, seconds=round(result.seconds, 2), rows_per_s=round(result.rows_per_second, 1),
                  workers=result.workers, max_rss_mib=round(rss_mib, 1))
    return record


def run_mode(mode: str, engine: Path, inputs: list[Path], work: Path, batch_size: int, timeout: float) -> dict:
    out = work / f"out-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "FEWSHOT_ONNX_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, __file__, "--child", mode, "--engine", str(engine), "--child-out", str(out),
           "--batch-size", str(batch_size), "--inputs", *map(str, inputs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {mode:9s} {record['rows_per_s']:8.1f} rows/s  ({record['seconds']} s, RSS {record['max_rss_mib']} MiB"
          + (f", Ray start {record['ray_start_s']} s" if "ray_start_s" in record else "") + ")", flush=True)
    return record


def cost_note(per_core: float, node_cores: int, usd: float, rows: float = 1e8) -> dict:
    """What ``rows`` would take on N nodes of ``node_cores`` cores at ``per_core`` rows/s per core."""
    core_hours = rows / per_core / 3600
    nodes = {n: {"hours": round(core_hours / (n * node_cores), 2), "usd": round(core_hours * usd, 2)}
             for n in (1, 10, 100)}
    return {"rows": int(rows), "per_core_rows_per_s": round(per_core, 1), "core_hours": round(core_hours, 1),
            "node_cores": node_cores, "usd_per_core_hour": usd, "nodes": nodes}


def markdown(report: dict) -> str:
    r = {x["mode"]: x for x in report["runs"]}
    t, c = report["targets"], report["cost_100m"]
    lines = [f"# Corpus-scale classify: streaming vs Ray Data ({report['rows']:,} short texts)", "",
             f"Engine: MiniLM, 77 Banking77 classes x 10 examples, portable ONNX ({report['quantize'] or 'fp32'}); "
             f"{report['files']} CSV inputs; batch size {report['batch_size']}. Machine: {report['machine']}.", "",
             "| mode | rows/s | job s | Ray start s | peak RSS (MiB) |", "|---|---|---|---|---|"]
    for mode in MODES:
        x = r[mode]
        lines.append(f"| {mode} | {x['rows_per_s']:.1f} | {x['seconds']} | {x.get('ray_start_s', '-')} | "
                     f"{x['max_rss_mib']} |")
    lines += ["", "| target | measured | met |", "|---|---|---|",
              f"| Ray 2 workers >= 1.6x Ray 1 worker | {t['ray2_over_ray1']:.2f}x | {t['ray2_over_ray1'] >= 1.6} |",
              f"| Ray 1 worker overhead vs streaming <= 15% | {100 * t['ray1_overhead']:.1f}% | "
              f"{t['ray1_overhead'] <= 0.15} |",
              f"| streaming RSS < 1 GiB | {r['streaming']['max_rss_mib']} MiB | {t['rss_ok']} |", "",
              "## 100M rows, on paper", "",
              f"Per-core rate on Ray: {c['per_core_rows_per_s']:,} rows/s (the 2-worker rate / 2, so Ray's overhead "
              f"and the 2-worker scaling are in it) = {c['core_hours']:,} core-hours for {c['rows']:,} rows; at "
              f"${c['usd_per_core_hour']}/core-hour that is ${c['nodes'][1]['usd']:,} whatever the node count "
              "(one worker per core; reading, writing and worker start-up are small beside it at this scale; "
              "a node's cores must not be shared, as they are on this machine).", "",
              f"| nodes x {c['node_cores']} cores | wall hours |", "|---|---|"]
    lines += [f"| {n} | {v['hours']} |" for n, v in c["nodes"].items()]
    lines += ["", "Reproduce: `" + report["command"] + "`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--quantize", default="int8", choices=("int8", "none"))
    p.add_argument("--node-cores", type=int, default=16)
    p.add_argument("--usd-per-core-hour", type=float, default=0.04)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per mode")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "batch_ray"),
                   help="results path without suffix (.json and .md are written)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--inputs", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.engine, args.inputs, args.child_out, args.batch_size)))
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="batch-ray-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        quantize = None if args.quantize == "none" else args.quantize
        print(f"writing {args.rows:,} texts and building the {args.quantize} engine in {work}", flush=True)
        inputs = write_corpus(work, args.rows, args.files)
        engine = work / "engine"
        if not engine.exists():
            build_engine(engine, quantize)
        runs = [run_mode(mode, engine, inputs, work, args.batch_size, args.timeout) for mode in MODES]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    r = {x["mode"]: x for x in runs}
    ratio = r["ray-2"]["rows_per_s"] / r["ray-1"]["rows_per_s"]
    report = {
        "rows": args.rows, "files": args.files, "batch_size": args.batch_size, "quantize": quantize,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
                   f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        "runs": runs,
        "targets": {"ray2_over_ray1": round(ratio, 3),
                    "ray1_overhead": round(r["streaming"]["rows_per_s"] / r["ray-1"]["rows_per_s"] - 1, 3),
                    "rss_ok": r["streaming"]["max_rss_mib"] < 1024},
        "cost_100m": cost_note(r["ray-2"]["rows_per_s"] / 2, args.node_cores, args.usd_per_core_hour),
        "command": " ".join([".venv/bin/python", "benchmarks/batch_ray.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
