"""Omniglot evaluation set (659 classes x 20 drawings) with effnet-lite0: episodic 5-way 1/5-shot.

One pool, so each episode draws its support and queries disjointly from the same classes.
Encoding (13,180 images) is slow on a CPU, so it goes through the embedding cache in 1024-image chunks of
the evaluation set's own order: an interrupted run resumes, and ``--classes N`` (the first N classes) only
needs the chunks that cover them.

    .venv/bin/python benchmarks/run_images.py [--classes N] [--episodes 600] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fewshot.datasets import load_dataset
from fewshot.encoders import load_encoder
from fewshot.evaluation.bench import BenchData, encode_cached, run_mode
from fewshot.evaluation.reports import write_reports

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images" / "omniglot"
CHUNK = 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "images_evaluation.npz"))
    ap.add_argument("--encoder", default="effnet-lite0")
    ap.add_argument("--classes", type=int, default=None,
                    help="use only the first N classes (in the file's alphabet order)")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--query", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=["prototype", "simpleshot", "knn"])
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--encode-only", action="store_true", help="fill the embedding cache and stop")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    full = load_dataset(args.data)
    keep = set(full.classes[:args.classes]) if args.classes else set(full.classes)
    n = sum(lab in keep for lab in full.labels)
    if full.labels[:n] != [lab for lab in full.labels if lab in keep]:
        raise SystemExit("classes are not stored contiguously; cannot take a prefix")
    encoder = load_encoder(args.encoder)
    t0 = time.perf_counter()
    covered = min(len(full), -(-n // CHUNK) * CHUNK)          # whole chunks: the same cache keys as a full run
    x = encode_cached(encoder, full.inputs[:covered], args.cache_dir, chunk_size=CHUNK)[:n]
    print(f"embeddings ({encoder.name}): {x.shape}, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.encode_only:
        return 0
    classes = sorted(keep)
    codes = full.__class__(full.inputs[:n], full.labels[:n], full.source, full.kind).label_codes(classes)
    data = BenchData(encoder.name, classes, x, codes, x, codes, None, True, 0.0)
    results = run_mode(data, "episodic", methods=args.methods, way=5, shots=(1, 5), query=args.query,
                       episodes=args.episodes, seed=args.seed)
    payload = {"encoder": data.encoder, "results": results}
    title = (f"Omniglot evaluation set, {len(classes)} of {len(full.classes)} classes ({data.encoder}), "
             "5-way, one pool")
    for p in write_reports(payload, Path(args.out) / "omniglot.json", title):
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
