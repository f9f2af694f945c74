"""Cold start (issue 19): how long a fresh Python process takes from `import fewshot` to its first prediction.

    .venv/bin/python benchmarks/cold_start.py [--repeats 3] [--out benchmarks/results/cold_start]
                                              [--portable-python VENV/bin/python] [--only ROW [ROW ...]]

Engines: the shipped Banking77 sample (10 intents x 5 support texts, `fewshot/data/banking77_sample.csv`) on
'minilm', saved three ways — torch (the encoder by name), portable fp32 and portable int8 (ONNX exports inside the
save). Every row is measured in new processes, `--repeats` times (median reported, all values kept):

* `import`: `python -c "import fewshot"` (in-process time of the import);
* `portable fp32` / `portable int8`: in-process, before `import fewshot` → `FewShotEngine.load(dir)` → the first
  `predict` returns (torch, transformers and sentence-transformers blocked from import, as where they are not
  installed); with `--portable-python` the same again in that interpreter (e.g. the clean venv that
  `scripts/check_portable.sh --keep` leaves: a real torch-free install);
* `torch load`: the same for the torch engine (`FewShotEngine.load` + predict);
* `torch construct`: `FewShotEngine(encoder="minilm")` + one description-only class + predict;
* `cli classify --index (torch|portable)`, `cli classify --labels`: the whole `fewshot classify ...` command,
  process start to exit (wall clock, interpreter start-up included).

Each in-process row also records the heavy modules the process had imported at the end. Writes OUT.json and
OUT.md. The machine's load average is recorded before and after: on a shared machine, run it when it is quiet.
"""
from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn", "scipy", "pandas", "faiss", "onnxruntime",
         "PIL", "tqdm")
BLOCKED = ("torch", "torchvision", "transformers", "sentence_transformers", "open_clip", "timm")
TEXT = "I still have not received my new card, I ordered over a week ago."
ROWS = ("import", "portable fp32", "portable int8", "torch load", "torch construct", "cli classify --index torch",
        "cli classify --index portable", "cli classify --labels")

#: runs in the fresh process: {"seconds", "modules"}; argv: mode, engine dir, text, block torch (0/1)
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
mode, where, text, block = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if block:
    import importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked (a torch-free deployment)")
            return None
    sys.meta_path.insert(0, _Block())
import fewshot
t_import = time.perf_counter()
if mode == "import":
    seconds = t_import - t0
else:
    if mode == "load":
        engine = fewshot.FewShotEngine.load(where)
    else:
        engine = fewshot.FewShotEngine(encoder="minilm")
        engine.add_class("card_arrival", description="a card that has not arrived yet")
        engine.add_class("exchange_rate", description="the exchange rate of a currency")
    label = engine.predict([text])[0].label
    seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "import_seconds": t_import - t0,
                  "modules": [m for m in HEAVY if m in sys.modules]}))
""".replace("BLOCKED", repr(BLOCKED)).replace("HEAVY", repr(HEAVY))


def child_env() -> dict[str, str]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", FEWSHOT_PROGRESS="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def in_process(python: str, mode: str, where: str, block: bool, cwd: Path) -> dict:
    proc = subprocess.run([python, "-c", CHILD, mode, where, TEXT, "1" if block else "0"], capture_output=True,
                          text=True, env=child_env(), cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} {where} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def whole_command(python: str, args: list[str], cwd: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([python, "-m", "fewshot", *args], capture_output=True, text=True, env=child_env(),
                          cwd=cwd, check=False)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"fewshot {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return {"seconds": seconds, "modules": [], "stderr_lines": len(proc.stderr.splitlines())}


def build_engines(work: Path) -> dict[str, Path]:
    from fewshot import FewShotEngine
    from fewshot.datasets import banking77_sample

    support, _ = banking77_sample()
    engine = FewShotEngine(encoder="minilm")
    for label, texts in support.items():
        engine.add_class(label, examples=texts)
    dirs = {"torch": work / "torch", "portable fp32": work / "fp32", "portable int8": work / "int8"}
    engine.save(dirs["torch"])
    engine.save(dirs["portable fp32"], portable=True)
    engine.save(dirs["portable int8"], portable=True, quantize="int8")
    return dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cold_start"))
    parser.add_argument("--portable-python", default=None, help="an interpreter without torch (clean venv)")
    parser.add_argument("--only", nargs="+", choices=ROWS, default=None, help="measure these rows only")
    args = parser.parse_args()
    rows = list(args.only or ROWS)
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="fewshot-cold-"))
    try:
        os.environ.setdefault("FEWSHOT_PROGRESS", "0")
        dirs = build_engines(work)
        plan: list[tuple[str, object]] = []
        for row in rows:
            if row == "import":
                plan.append((row, lambda: in_process(python, "import", "", False, work)))
            elif row.startswith("portable"):
                plan.append((row, lambda r=row: in_process(python, "load", str(dirs[r]), True, work)))
                if args.portable_python:
                    plan.append((f"{row} (torch-free venv)",
                                 lambda r=row: in_process(args.portable_python, "load", str(dirs[r]), False, work)))
            elif row == "torch load":
                plan.append((row, lambda: in_process(python, "load", str(dirs["torch"]), False, work)))
            elif row == "torch construct":
                plan.append((row, lambda: in_process(python, "construct", "", False, work)))
            elif row == "cli classify --labels":
                plan.append((row, lambda: whole_command(python, ["classify", "--labels", "card arrival,exchange rate",
                                                                 TEXT], work)))
            else:
                which = dirs["torch"] if row.endswith("torch") else dirs["portable fp32"]
                plan.append((row, lambda d=which: whole_command(python, ["classify", "--index", str(d), TEXT], work)))
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict]] = {name: [] for name, _ in plan}
        for _ in range(args.repeats):  # interleaved: a burst of load hits every row alike
            for name, measure in plan:
                runs[name].append(measure())  # type: ignore[operator]
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = [{"row": name, "median_seconds": round(statistics.median(r["seconds"] for r in rs), 3),
                "seconds": [round(r["seconds"], 3) for r in rs],
                "import_seconds": round(statistics.median(r["import_seconds"] for r in rs), 3)
                if "import_seconds" in rs[0] else None,
                "modules": rs[-1]["modules"]} for name, rs in runs.items()]
    payload = {"what": "fresh process: import fewshot -> first prediction (median of repeats)",
               "repeats": args.repeats, "python": platform.python_version(), "cpus": os.cpu_count(),
               "load_average": [round(load_before, 2), round(load_after, 2)],
               "targets": {"portable": 1.0, "torch cli classify": 4.0}, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    lines = ["# Cold start: a fresh process, `import fewshot` to the first prediction", "",
             f"Median of {args.repeats} runs per row (rows interleaved), Python {payload['python']}, "
             f"{payload['cpus']} CPUs, load average {load_before:.2f} before / {load_after:.2f} after. Engine: the "
             "shipped Banking77 sample (10 classes x 5 texts) on minilm. Targets: <= 1.0 s portable, <= 4 s for a "
             "torch `fewshot classify` call. `cli` rows are whole commands (interpreter start-up included).", "",
             "| row | median s | runs (s) | of which `import fewshot` | heavy modules imported |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | {r['median_seconds']:.2f} | {', '.join(f'{s:.2f}' for s in r['seconds'])} | "
                     f"{'-' if r['import_seconds'] is None else format(r['import_seconds'], '.2f')} | "
                     f"{', '.join(r['modules']) or '-'} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
