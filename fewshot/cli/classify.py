"""``fewshot classify``: zero-shot from labels, or with a saved engine."""
from __future__ import annotations

import argparse
import json

from fewshot.errors import InvalidInputError

NAME = "classify"
HELP = "classify inputs zero-shot from labels, or with a saved engine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default=None, help="encoder name (default: minilm; with --index, the saved one)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help='comma-separated class names, e.g. "refund,lost card,greeting" (zero-shot)')
    src.add_argument("--index", help="directory of a saved engine (FewShotEngine.save / fewshot index)")
    p.add_argument("--top-k", type=int, default=1, help="how many labels to report per input (default 1)")
    p.add_argument("--reject", action="store_true", help="open set: report no label when none fits")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="texts or image paths")


def run(args: argparse.Namespace) -> int:
    from fewshot.engine import FewShotEngine
    from fewshot.templates import humanise_label

    if args.index:
        engine = FewShotEngine.load(args.index, encoder=args.encoder)
    else:
        labels = [s.strip() for s in args.labels.split(",") if s.strip()]
        if not labels:
            raise InvalidInputError("--labels holds no class names")
        engine = FewShotEngine(encoder=args.encoder or "minilm")
        for label in labels:
            engine.add_class(label, description=humanise_label(label))
    preds = engine.predict(args.inputs, top_k=args.top_k, reject=args.reject)
    if args.json:
        print(json.dumps([{"input": str(x), "label": p.label, "score": p.score,
                           "top_k": [{"label": lab, "score": s} for lab, s in p.top_k]}
                          for x, p in zip(args.inputs, preds)], ensure_ascii=False, indent=1))
    else:
        for x, p in zip(args.inputs, preds):
            alts = ", ".join(f"{lab} {s:.3f}" for lab, s in p.top_k[1:])
            print(f"{p.label if p.label is not None else '<unknown>'}\t{p.score:.3f}\t{x}"
                  + (f"\t({alts})" if alts else ""))
    return 0
