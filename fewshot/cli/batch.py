"""``fewshot batch``: classify a corpus (CSV / JSONL / Parquet) with a saved engine into Parquet files, in one
streaming process or on Ray (``--ray [ADDRESS]``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "batch"
HELP = "classify CSV/JSONL/Parquet files with a saved engine into Parquet (streaming, or on Ray with --ray)"


def add_job_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """The arguments ``batch`` and ``embed`` share."""
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="CSV, JSONL or Parquet files, globs (quote them) or folders")
    p.add_argument("--output", required=True, metavar="OUT_DIR",
                   help="folder to write Parquet files into; it appears only when complete, with a _SUCCESS file")
    p.add_argument("--text-column", default="text",
                   help="column holding the texts, or image paths (relative to their file's folder); default text")
    p.add_argument("--id-column", default=None,
                   help="column identifying each row (default: 'id' when the files have one, else the row's "
                        "position in the input, 0-based across the files in order)")
    p.add_argument("--input-kind", choices=("auto", "text", "image"), default="auto",
                   help="what the text column holds (default auto: image paths when the encoder embeds no text)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray Data: bare --ray joins $RAY_ADDRESS or starts a local Ray; --ray ADDRESS "
                        "(e.g. auto, head:6379) joins that cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers, one model each (default: one per CPU of the cluster)")
    p.add_argument("--batch-size", type=int, default=256, help=f"rows per {what} call (default 256)")
    p.add_argument("--ray-log", default=None, metavar="FILE",
                   help="file for Ray's own output (default: a new file in the temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists (once the job succeeds)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (streaming mode)")
    p.add_argument("--json", action="store_true", help="print the job's summary (_SUCCESS) as JSON")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", required=True, metavar="DIR", help="directory of a saved engine (fewshot index / "
                   "FewShotEngine.save; portable ONNX engines load fastest, without torch)")
    add_job_arguments(p, "predict")
    p.add_argument("--top-k", type=int, default=None, help="also write a top_k column with the K best labels")
    p.add_argument("--reject", action="store_true", help="open set: label is null when no class fits")


def ray_options(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """``ray=`` and ``log_file=`` for the API from the CLI flags; tells the user where Ray's output goes."""
    if args.ray is None:
        if args.workers is not None or args.ray_log is not None:
            from fewshot.errors import InvalidInputError
            raise InvalidInputError("--workers and --ray-log apply to a Ray job; add --ray")
        return {"ray": None}
    log = args.ray_log or os.path.join(tempfile.gettempdir(),
                                       f"fewshot-{command}-ray-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")
    where = f"Ray at {args.ray}" if args.ray else ("Ray at $RAY_ADDRESS" if os.environ.get("RAY_ADDRESS")
                                                    else "a local Ray")
    print(f"fewshot {command}: running on {where}; Ray's own output goes to {log}", file=sys.stderr, flush=True)
    return {"ray": args.ray or True, "log_file": log}


def report(command: str, result: Any, args: argparse.Namespace, verb: str) -> int:
    if args.json:
        print(json.dumps(result.summary, indent=1, ensure_ascii=False))
        return 0
    rejected = f", {result.rejected:,} rejected" if result.rejected else ""
    mode = f"on Ray, {result.workers} worker{'s' if result.workers != 1 else ''}" if result.mode == "ray" \
        else "streaming"
    log = f"; Ray log: {result.log}" if result.log else ""
    print(f"fewshot {command}: {verb} {result.rows:,} rows{rejected} into {len(result.files)} Parquet "
          f"file{'s' if len(result.files) != 1 else ''} in {result.output} in {result.seconds:.1f} s "
          f"({result.rows_per_second:,.0f} rows/s, {mode}{log})")
    return 0


def interrupted(command: str, output: str, log: str | None) -> int:
    print(f"fewshot {command}: interrupted; {Path(output).absolute()} was not written"
          + (f" (Ray log: {log})" if log else ""), file=sys.stderr)
    return 130


def run(args: argparse.Namespace) -> int:
    from fewshot.batch import classify_files

    options = ray_options(args, NAME)
    try:
        result = classify_files(args.engine, args.input, args.output, text_column=args.text_column,
                                id_column=args.id_column, top_k=args.top_k, reject=args.reject,
                                batch_size=args.batch_size, workers=args.workers, kind=args.input_kind,
                                overwrite=args.overwrite, progress=False if args.no_progress else None, **options)
    except KeyboardInterrupt:
        return interrupted(NAME, args.output, options.get("log_file"))
    return report(NAME, result, args, "classified")
