"""``fewshot index``: build and save an engine from a labelled CSV / JSONL file or an image folder."""
from __future__ import annotations

import argparse

NAME = "index"
HELP = "build and save an engine from a labelled CSV/JSONL file or image folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", required=True, help="CSV text,label | JSONL text/label | image folder")
    p.add_argument("--out", required=True, help="directory to save the engine into")
    p.add_argument("--encoder", default=None, help="encoder name (default: minilm for text, effnet-lite0 for images)")
    p.add_argument("--classifier", default="prototype", help="classification method (default: prototype)")
    p.add_argument("--descriptions", help="JSON file {label: description} to add as class descriptions")
    p.add_argument("--portable", action="store_true", help="bundle an ONNX encoder (loads without torch)")


def run(args: argparse.Namespace) -> int:
    from fewshot.datasets import load_dataset, load_descriptions
    from fewshot.engine import FewShotEngine

    data = load_dataset(args.train)
    is_images = data.kind == "image"
    encoder = args.encoder or ("effnet-lite0" if is_images else "minilm")
    descriptions = load_descriptions(args.descriptions)
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
