"""The engine's stateful property test (tests/engine/test_state_machine.py) at a long budget, recorded.

Runs pytest on that test with ``FEWSHOT_STATE_MACHINE_SEQUENCES`` = ``--sequences`` (CI runs 200) and writes
benchmarks/results/state_machine.{json,md}: sequences, steps per sequence, outcome, wall seconds, pytest's summary.

    .venv/bin/python benchmarks/state_machine.py --sequences 2000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/engine/test_state_machine.py"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "state_machine.json"))
    args = ap.parse_args(argv)
    env = {**os.environ, "FEWSHOT_STATE_MACHINE_SEQUENCES": str(args.sequences), "TQDM_DISABLE": "1",
           "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST,
                          "--hypothesis-show-statistics"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = run.stdout.strip().splitlines()
    summary = lines[-1] if lines else run.stderr.strip()[-500:]
    stats = [ln.strip() for ln in lines if "passing" in ln and "failing" in ln]
    payload = {"test": TEST, "sequences": args.sequences, "steps_per_sequence": 12, "passed": run.returncode == 0,
               "returncode": run.returncode, "wall_seconds": round(wall, 1), "summary": summary,
               "hypothesis": stats, "loadavg": [round(x, 2) for x in os.getloadavg()],
               "failure": None if run.returncode == 0 else "\n".join(lines[-60:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    md = ["# Engine state machine, long run", "",
          f"Written by `benchmarks/state_machine.py --sequences {args.sequences}`: `{TEST}` with "
          f"FEWSHOT_STATE_MACHINE_SEQUENCES={args.sequences} (up to 12 steps each).", "",
          f"- outcome: **{'passed' if payload['passed'] else 'FAILED'}** ({summary})",
          f"- hypothesis: {'; '.join(stats) or 'n/a'}",
          f"- wall time: {payload['wall_seconds']} s (load average at the end {payload['loadavg']})"]
    if payload["failure"]:
        md += ["", "```", payload["failure"], "```"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
