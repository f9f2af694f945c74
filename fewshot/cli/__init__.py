"""Command line: ``fewshot classify | demo | index | bench | export``."""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Sequence

from fewshot.errors import FewShotError


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify inputs zero-shot from labels, or with a saved engine",
                       description="Classify texts (or image paths) with zero-shot labels or a saved engine.")
    p.add_argument("--encoder", default=None, help="encoder name (default: minilm; with --index, the saved one)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help='comma-separated class names, e.g. "refund,lost card,greeting" (zero-shot)')
    src.add_argument("--index", help="directory of a saved engine (FewShotEngine.save / fewshot index)")
    p.add_argument("--top-k", type=int, default=1, help="how many labels to report per input (default 1)")
    p.add_argument("--reject", action="store_true", help="open set: report no label when none fits")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="texts or image paths")
    p.set_defaults(func=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    from fewshot.engine.engine import FewShotEngine
    from fewshot.templates import humanise_label

    if args.index:
        engine = FewShotEngine.load(args.index, encoder=args.encoder)
    else:
        labels = [s.strip() for s in args.labels.split(",") if s.strip()]
        if not labels:
            raise FewShotError("--labels holds no class names")
        engine = FewShotEngine(encoder=args.encoder or "minilm")
        for label in labels:
            engine.add_class(label, description=humanise_label(label))
    preds = engine.predict(args.inputs, top_k=args.top_k, reject=args.reject)
    if args.json:
        print(json.dumps([{"input": str(x), "label": p.label, "score": p.score,
                           "top_k": [{"label": l, "score": s} for l, s in p.top_k]}
                          for x, p in zip(args.inputs, preds)], ensure_ascii=False, indent=1))
    else:
        for x, p in zip(args.inputs, preds):
            alts = ", ".join(f"{l} {s:.3f}" for l, s in p.top_k[1:])
            print(f"{p.label if p.label is not None else '<unknown>'}\t{p.score:.3f}\t{x}"
                  + (f"\t({alts})" if alts else ""))
    return 0


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build and save an engine from a labelled CSV/JSONL file or image folder")
    p.add_argument("--train", required=True, help="CSV text,label | JSONL text/label | image folder")
    p.add_argument("--out", required=True, help="directory to save the engine into")
    p.add_argument("--encoder", default=None, help="encoder name (default: minilm for text, effnet-lite0 for images)")
    p.add_argument("--classifier", default="prototype", help="classification method (default: prototype)")
    p.add_argument("--descriptions", help="JSON file {label: description} to add as class descriptions")
    p.add_argument("--portable", action="store_true", help="bundle an ONNX encoder (loads without torch)")
    p.set_defaults(func=cmd_index)


def cmd_index(args: argparse.Namespace) -> int:
    from fewshot.datasets import load_dataset
    from fewshot.engine.engine import FewShotEngine

    data = load_dataset(args.train)
    is_images = data.kind == "image"
    encoder = args.encoder or ("effnet-lite0" if is_images else "minilm")
    descriptions = json.loads(Path(args.descriptions).read_text(encoding="utf-8")) if args.descriptions else {}
    engine = FewShotEngine(encoder=encoder, classifier=args.classifier)
    by_label: dict[str, list] = {}
    for x, y in zip(data.inputs, data.labels):
        by_label.setdefault(y, []).append(x)
    vectors = engine.embed([x for xs in by_label.values() for x in xs], show_progress_bar=True)
    start = 0
    for label, xs in by_label.items():
        engine.add_class(label, vectors=vectors[start:start + len(xs)], description=descriptions.get(label))
        start += len(xs)
    engine.save(args.out, portable=args.portable)
    print(f"saved an engine with {len(engine.classes)} classes and {start} examples to {args.out}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="register 10 Banking77 intents, classify held-back queries, save and reload")
    p.add_argument("--out", default=None, help="where to save the demo engine (default: a temporary directory)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from fewshot.engine.engine import FewShotEngine
    from fewshot.templates import humanise_label

    sample = resources.files("fewshot") / "data" / "banking77_sample.csv"
    with sample.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    support: dict[str, list[str]] = {}
    queries = [(r["text"], r["label"]) for r in rows if r["split"] == "query"]
    for r in rows:
        if r["split"] == "support":
            support.setdefault(r["label"], []).append(r["text"])
    print("fewshot demo — 10 Banking77 intents (CC BY 4.0, PolyAI), offline MiniLM encoder\n")
    t0 = time.perf_counter()
    engine = FewShotEngine(encoder="minilm")
    print(f"loaded encoder {engine.encoder.name} ({engine.encoder.dim}-d) in {time.perf_counter() - t0:.1f} s")
    labels = list(support)
    zero_shot = set(labels[-2:])  # two intents are registered from a description alone
    t0 = time.perf_counter()
    for label in labels:
        if label in zero_shot:
            engine.add_class(label, description=humanise_label(label))
        else:
            engine.add_class(label, examples=support[label], description=humanise_label(label))
    print(f"registered {len(labels)} classes in {time.perf_counter() - t0:.2f} s: "
          f"{len(labels) - len(zero_shot)} from 5 examples + a description, {len(zero_shot)} from a description "
          f"only ({', '.join(sorted(zero_shot))})\n")
    texts = [q for q, _ in queries]
    t0 = time.perf_counter()
    preds = engine.predict(texts, top_k=3)
    elapsed = time.perf_counter() - t0
    correct = 0
    for (text, gold), p in zip(queries, preds):
        ok = p.label == gold
        correct += ok
        print(f"{'✓' if ok else '✗'} {p.label:<26} {p.score:.3f}  {text[:70]}" + ("" if ok else f"   [gold: {gold}]"))
    print(f"\naccuracy {correct}/{len(queries)} = {correct / len(queries):.3f} "
          f"({1000 * elapsed / len(queries):.1f} ms per query, batch of {len(queries)})")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "demo_engine")
        engine.save(out)
        reloaded = FewShotEngine.load(out)
        same = [p.label for p in reloaded.predict(texts)] == [p.label for p in preds]
        print(f"saved to {out if args.out else 'a temporary directory'} and reloaded: "
              f"{'same predictions' if same else 'PREDICTIONS DIFFER'}")
    return 0 if same else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewshot", description="Few-shot and zero-shot classification on "
                                     "frozen encoders.")
    from fewshot._core import __version__
    parser.add_argument("--version", action="version", version=f"fewshot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_classify(sub)
    _add_index(sub)
    _add_demo(sub)
    # subcommands defined beside their code: (name, module, help); each module exposes add_<name>_arguments
    # and run_<name>. Imported here so a broken module fails loudly instead of vanishing from the CLI.
    for name, module, help_text in (
            ("bench", "fewshot.evaluation.bench", "benchmark episodic / all-classes / zero-shot / open-set accuracy"),
            ("adapt", "fewshot.training.image_transfer", "fine-tune an image encoder's last stages on a labelled source set of "
                                          "other classes (e.g. Omniglot background), for few-shot on new classes"),
            ("export", "fewshot.export.onnx_export", "export an encoder to ONNX (optionally int8)")):
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text)
        getattr(mod, f"add_{name}_arguments")(p)
        p.set_defaults(func=getattr(mod, f"run_{name}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FewShotError as exc:
        print(f"fewshot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
