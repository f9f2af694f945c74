"""Text benchmarks: Banking77 and CLINC150 (in-scope intents) with minilm.

For each data set: episodic 5-way 1/5-shot (600 episodes, 15 queries per class; classes drawn from TEST,
support from TRAIN), all-classes 1/5/10-shot (5 repeats of K shots per class, all of TEST), zero-shot
(class names through the prompt templates). Writes benchmarks/results/<name>.json/.md/.png and a combined
benchmarks/results/text.md.

    .venv/bin/python benchmarks/run_text.py [--datasets banking77 clinc150] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fewshot.evaluation.bench import prepare, run_mode
from fewshot.evaluation.reports import markdown_table, write_reports

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
DATASETS = {
    "banking77": (DATA / "banking77" / "train.csv", DATA / "banking77" / "test.csv"),
    # in-scope only: the ``train`` / ``test`` splits of data_full.json (oos items are separate splits)
    "clinc150": (f"{DATA / 'clinc150' / 'data_full.json'}#train", f"{DATA / 'clinc150' / 'data_full.json'}#test"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--methods", nargs="+", default=["prototype", "simpleshot", "knn"])
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    combined = []
    for name in args.datasets:
        train, test = DATASETS[name]
        data = prepare(str(train), str(test), args.encoder, cache_dir=args.cache_dir)
        results = run_mode(data, "episodic", methods=args.methods, way=5, shots=(1, 5), query=15,
                           episodes=args.episodes, seed=args.seed)
        results += run_mode(data, "all", methods=args.methods, shots=(1, 5, 10), episodes=args.repeats,
                            seed=args.seed)
        results += run_mode(data, "zero-shot")
        payload = {"encoder": data.encoder, "results": results}
        title = f"{name} ({len(data.classes)} classes, {len(data.train_y)} train / {len(data.test_y)} test)"
        for p in write_reports(payload, Path(args.out) / f"{name}.json", title):
            print(f"wrote {p}", file=sys.stderr)
        combined.append(markdown_table(payload, title))
    if set(args.datasets) == set(DATASETS):
        Path(args.out, "text.md").write_text("\n".join(combined), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
