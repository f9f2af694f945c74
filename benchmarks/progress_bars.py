"""Progress where work is long, silence where it is not (issue 19): real calls, timed, their stderr read.

    .venv/bin/python benchmarks/progress_bars.py [--only CALL [CALL ...]] [--out benchmarks/results/progress_bars]

Each call runs in its own fresh process with the default settings (``FEWSHOT_PROGRESS`` and ``TQDM_DISABLE``
removed from its environment), on Banking77 (``../shared/data/text/banking77``) and the offline default encoder.
The child prepares what the call needs (an engine with the 10-shot support of 77 intents, a portable save...)
and writes a marker to stderr just before and just after the timed call; only what the process writes to stderr
between the markers counts. A tqdm bar is recognised by its elapsed-time stamp (``[00:03<...``), whoever drew it
(fewshot's bars, or a third-party one such as transformers' "Loading weights" or sentence-transformers'
"Batches"). The target: no bar for a call under 2 s, a bar for every call over 10 s; calls in between may show
one or not. The CLI row times the whole ``fewshot classify`` command (process start to exit) and reads all of its
stderr.

Writes OUT.json and OUT.md. Seconds depend on the machine's load (recorded): the verdict is per call, from that
call's own time, so load moves calls between the bands but cannot fake a verdict.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FEWSHOT_SHARED_DATA", REPO.parent / "shared" / "data")) / "text" / "banking77"
START, END = "@@timed-call-start@@", "@@timed-call-end@@"
BAR = re.compile(r"\[\d\d:\d\d[<\]]")   # tqdm's "[elapsed<remaining" / "[elapsed]" stamp
QUIET_BELOW, BAR_ABOVE = 2.0, 10.0

#: the child: argv = call name, banking77 folder, scratch folder; prints one JSON line {"seconds"} on stdout
CHILD = r"""
import csv, json, sys, time
from collections import defaultdict
call, data, scratch = sys.argv[1], sys.argv[2], sys.argv[3]

def rows(split):
    with open(f"{data}/{split}.csv", newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]

def support(k):
    by = defaultdict(list)
    for text, label in rows("train"):
        if len(by[label]) < k:
            by[label].append(text)
    return by

from fewshot import FewShotEngine
test = [t for t, _ in rows("test")]
timed = None
if call == "construct":
    timed = lambda: FewShotEngine(encoder="minilm")
elif call == "load":
    eng = FewShotEngine(encoder="minilm")
    for label, texts in sorted(support(5).items())[:10]:
        eng.add_class(label, texts)
    eng.save(f"{scratch}/torch")
    timed = lambda: FewShotEngine.load(f"{scratch}/torch").predict(["hi"])
else:
    eng = FewShotEngine(encoder="minilm")
    sup = support(10)
    if call == "add_class (5 examples)":
        timed = lambda: eng.add_class("card_arrival", sup["card_arrival"][:5])
    else:
        for label, texts in sorted(sup.items()):
            eng.add_class(label, texts)
        if call == "predict (1 text)":
            eng.predict(["warm-up"])
            timed = lambda: eng.predict(["where is my card?"])
        elif call == "predict (300 texts)":
            eng.predict(["warm-up"])
            timed = lambda: eng.predict(test[:300])
        elif call == "predict (3080 texts)":
            eng.predict(["warm-up"])
            timed = lambda: eng.predict(test)
        elif call == "predict reject=True (1 text, after a change)":
            eng.predict(["warm-up"])
            eng.add_examples("card_arrival", ["my card has not come yet"])
            timed = lambda: eng.predict(["where is my card?"], reject=True)
        elif call == "refine linear (770 examples)":
            timed = lambda: eng.refine("linear")
        elif call == "refine encoder (770 examples)":
            timed = lambda: eng.refine("encoder")
        elif call == "save portable int8":
            timed = lambda: eng.save(f"{scratch}/portable", portable=True, quantize="int8")
        elif call == "onnx predict (3080 texts)":
            eng.save(f"{scratch}/portable", portable=True, quantize="int8")
            onnx = FewShotEngine.load(f"{scratch}/portable")
            onnx.predict(["warm-up"])
            timed = lambda: onnx.predict(test)
if timed is None:
    raise SystemExit(f"unknown call {call!r}")
sys.stderr.write("\n@@timed-call-start@@\n"); sys.stderr.flush()
t0 = time.perf_counter()
timed()
seconds = time.perf_counter() - t0
sys.stderr.flush(); sys.stderr.write("\n@@timed-call-end@@\n"); sys.stderr.flush()
print(json.dumps({"seconds": seconds}))
"""
CALLS = ("construct", "load", "add_class (5 examples)", "predict (1 text)", "predict (300 texts)",
         "predict (3080 texts)", "predict reject=True (1 text, after a change)", "refine linear (770 examples)",
         "refine encoder (770 examples)", "save portable int8", "onnx predict (3080 texts)", "cli classify --labels")


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FEWSHOT_PROGRESS", "TQDM_DISABLE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def verdict(seconds: float, bar: bool) -> str:
    if seconds < QUIET_BELOW:
        return "ok" if not bar else "VIOLATION: a bar under 2 s"
    if seconds > BAR_ABOVE:
        return "ok" if bar else "VIOLATION: no bar over 10 s"
    return "either (2-10 s)"


def measure(call: str, scratch: Path) -> dict:
    env = environment()
    if call == "cli classify --labels":
        cmd = [str(Path(sys.executable).with_name("fewshot")), "classify", "--labels",
               "card arrival,exchange rate,lost or stolen card", "where is my card?"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=scratch)
        seconds, stderr = time.perf_counter() - t0, out.stderr
    else:
        out = subprocess.run([sys.executable, "-c", CHILD, call, str(DATA), str(scratch)], capture_output=True,
                             text=True, env=env, timeout=1800, cwd=scratch)
        if out.returncode == 0:
            seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            stderr = out.stderr.split(START, 1)[1].split(END, 1)[0]
    if out.returncode != 0:
        raise RuntimeError(f"{call}: exit {out.returncode}\n{out.stderr[-3000:]}")
    bar = bool(BAR.search(stderr))
    shown = [line.strip() for line in re.split(r"[\r\n]", stderr) if BAR.search(line)]
    return {"call": call, "seconds": round(seconds, 3), "bar": bar, "verdict": verdict(seconds, bar),
            "last_bar_line": shown[-1][:160] if shown else None,
            "other_stderr": [line.strip()[:160] for line in re.split(r"[\r\n]", stderr)
                             if line.strip() and not BAR.search(line)][:5]}


def markdown(payload: dict) -> str:
    lines = ["# Progress bars: long calls show one, short calls stay silent", "",
             f"Written by `benchmarks/progress_bars.py`. Each call in a fresh process, default settings "
             f"(`FEWSHOT_PROGRESS` / `TQDM_DISABLE` unset), Banking77 + `minilm`; bar = a tqdm stamp on stderr "
             f"during the call. Target: none under {QUIET_BELOW:.0f} s, one over {BAR_ABOVE:.0f} s. "
             f"Load average before / after: {payload['load_before']} / {payload['load_after']}.", "",
             "| call | seconds | bar | verdict | last bar line |", "|---|---:|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['call']} | {r['seconds']:.2f} | {'yes' if r['bar'] else 'no'} | {r['verdict']} | "
                     f"{(r['last_bar_line'] or '').replace('|', '¦')} |")
    bad = [r["call"] for r in payload["rows"] if r["verdict"].startswith("VIOLATION")]
    lines += ["", f"Violations: {', '.join(bad) if bad else 'none'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=CALLS, help="run only these calls")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "progress_bars"))
    args = ap.parse_args(argv)
    if not (DATA / "train.csv").is_file():
        ap.error(f"Banking77 not found at {DATA} (set FEWSHOT_SHARED_DATA)")
    import tempfile

    payload: dict = {"load_before": [round(x, 2) for x in os.getloadavg()], "rows": []}
    with tempfile.TemporaryDirectory(prefix="fewshot-bars.") as tmp:
        for call in args.only or CALLS:
            scratch = Path(tmp) / re.sub(r"\W+", "_", call)
            scratch.mkdir()
            row = measure(call, scratch)
            print(f"[progress_bars] {call}: {row['seconds']:.2f} s, bar {'yes' if row['bar'] else 'no'} -> "
                  f"{row['verdict']}", file=sys.stderr, flush=True)
            payload["rows"].append(row)
    payload["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(payload), encoding="utf-8")
    print(markdown(payload))
    return 1 if any(r["verdict"].startswith("VIOLATION") for r in payload["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
