"""``fewshot embed``: embed a corpus (CSV / JSONL / Parquet) with an encoder into Parquet files (id, embedding),
in one streaming process or on Ray (``--ray [ADDRESS]``); ``fewshot index --from-embeddings`` builds an engine
from the result."""
from __future__ import annotations

import argparse

from fewshot.cli.batch import add_job_arguments, interrupted, ray_options, report

NAME = "embed"
HELP = "embed CSV/JSONL/Parquet files with an encoder into Parquet (id, embedding), streaming or on Ray"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", required=True, help="encoder name (minilm, effnet-lite0, onnx:DIR, st:..., ...)")
    add_job_arguments(p, "encode")


def run(args: argparse.Namespace) -> int:
    from fewshot.batch import embed_files

    options = ray_options(args, NAME)
    try:
        result = embed_files(args.encoder, args.input, args.output, text_column=args.text_column,
                             id_column=args.id_column, batch_size=args.batch_size, workers=args.workers,
                             kind=args.input_kind, overwrite=args.overwrite,
                             progress=False if args.no_progress else None, **options)
    except KeyboardInterrupt:
        return interrupted(NAME, args.output, options.get("log_file"))
    return report(NAME, result, args, "embedded")
