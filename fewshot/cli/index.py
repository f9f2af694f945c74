"""``fewshot index``: build and save an engine from a labelled CSV / JSONL file or an image folder, or from
``fewshot embed`` output joined with labels by id (``--from-embeddings DIR --labels FILE...``)."""
from __future__ import annotations

import argparse

from fewshot.errors import InvalidInputError

NAME = "index"
HELP = "build and save an engine from a labelled CSV/JSONL file or image folder, or from fewshot embed output"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", help="CSV text,label | JSONL text/label | image folder")
    src.add_argument("--from-embeddings", metavar="DIR",
                     help="a complete `fewshot embed` output folder; its rows are joined with --labels by id")
    p.add_argument("--out", required=True, help="directory to save the engine into")
    p.add_argument("--encoder", default=None, help="encoder name (default: minilm for text, effnet-lite0 for images; "
                   "with --from-embeddings, the one that embedded them)")
    p.add_argument("--classifier", default="prototype", help="classification method (default: prototype)")
    p.add_argument("--descriptions", help="JSON file {label: description} to add as class descriptions")
    p.add_argument("--portable", action="store_true", help="bundle an ONNX encoder (loads without torch)")
    p.add_argument("--labels", nargs="+", metavar="PATH",
                   help="with --from-embeddings: CSV/JSONL/Parquet files holding each row's id and label (e.g. the "
                        "files given to `fewshot embed`); rows with no label are skipped")
    p.add_argument("--label-column", default="label", help="with --from-embeddings: the label column (default label)")
    p.add_argument("--id-column", default=None,
                   help="with --from-embeddings: the id column of --labels (default: 'id' when the files have one, "
                        "else row positions, which then must be those of the embedded files)")


def run(args: argparse.Namespace) -> int:
    if args.from_embeddings:
        return from_embeddings(args)
    if args.labels:
        raise InvalidInputError("--labels goes with --from-embeddings; with --train the labels are in the file")
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
    vectors = engine.embed([x for xs in by_label.values() for x in xs])
    start = 0
    for label, xs in by_label.items():
        engine.add_class(label, vectors=vectors[start:start + len(xs)], description=descriptions.get(label))
        start += len(xs)
    engine.save(args.out, portable=args.portable)
    print(f"saved an engine with {len(engine.classes)} classes and {start} examples to {args.out}")
    return 0


def from_embeddings(args: argparse.Namespace) -> int:
    from fewshot.batch.from_embeddings import labelled_vectors
    from fewshot.datasets import load_descriptions
    from fewshot.engine import FewShotEngine

    if not args.labels:
        raise InvalidInputError("--from-embeddings needs --labels FILE... (the files with each row's id and label)")
    data = labelled_vectors(args.from_embeddings, args.labels, label_column=args.label_column,
                            id_column=args.id_column)
    encoder = args.encoder or data.encoder
    if not encoder:
        raise InvalidInputError(f"{args.from_embeddings} does not record its encoder; pass --encoder")
    descriptions = load_descriptions(args.descriptions)
    engine = FewShotEngine(encoder=encoder, classifier=args.classifier)
    for label, vectors in data.classes.items():
        engine.add_class(label, vectors=vectors, description=descriptions.get(label))
    engine.save(args.out, portable=args.portable)
    skipped = f" ({data.unlabelled:,} embeddings without a label skipped)" if data.unlabelled else ""
    print(f"saved an engine with {len(engine.classes)} classes and {data.examples:,} examples from "
          f"{args.from_embeddings} to {args.out}{skipped}")
    return 0
