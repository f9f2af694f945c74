"""Does it carry over? Every method beside the plain baselines on three development sets, and defaults chosen
leave-one-data-set-out.

Data sets: Banking77 (77 intents), CLINC150 in-scope (150 intents), StackOverflow-20 (20 topics; fewshot's split:
the first 500 titles of each tag train, the other 500 test). All classes, K ∈ {1, 5, 10} shots per class drawn
from TRAIN (``fewshot.evaluation.episodes.sample_shots``, the same draws for every method), all of TEST, 5 draws.
Baselines on the same frozen embeddings and draws: nearest prototype, scikit-learn
``LogisticRegression(C=10, max_iter=2000)`` (``logreg``) and the default C = 1 (``logreg-c1``).

The "auto" row is chosen leave-one-data-set-out: for each data set D and K, the method with the best mean gain
over ``logreg`` on the *other two* data sets, reported on D. Nothing is chosen on a test split of D.

    .venv/bin/python benchmarks/carryover.py [--encoder minilm] [--methods ...] [--datasets ...] [--drawn-only] [--tag NAME]

writes benchmarks/results/carryover[_TAG].json and .md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fewshot.evaluation.bench import prepare
from fewshot.evaluation.episodes import confidence_interval, run_all_classes, sample_shots

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text"
DATASETS = {
    "banking77": (DATA / "banking77" / "train.csv", DATA / "banking77" / "test.csv"),
    "clinc150": (f"{DATA / 'clinc150' / 'data_full.json'}#train", f"{DATA / 'clinc150' / 'data_full.json'}#test"),
    "stackoverflow": (f"{DATA / 'stackoverflow' / 'title_StackOverflow.txt'}#train",
                      f"{DATA / 'stackoverflow' / 'title_StackOverflow.txt'}#test"),
}
BASELINE = "logreg"
DEFAULT_METHODS = ("prototype", "logreg", "logreg-c1", "zero-shot", "fusion", "linear")


def drawn_train_vectors(data, train_spec: str, encoder: str, shots: list[int], draws: int, seed: int) -> np.ndarray:
    """(Mtr, d) TRAIN embeddings with only the rows some support draw uses encoded (the draws of
    ``run_all_classes``: ``sample_shots`` over the same classes, K and seed); every other row is NaN, so a row
    read by mistake would fail the support checks. For slow encoders: the draws use a fraction of TRAIN."""
    from fewshot.datasets import load_dataset
    from fewshot.encoders import load_encoder
    from fewshot.encoders.cache import cached_encode

    classes = np.unique(np.concatenate([np.unique(data.test_y), np.unique(data.train_y[data.train_y >= 0])]))
    used = np.unique(np.concatenate([sample_shots(data.train_y, classes, k, draws, seed).ravel() for k in shots]))
    inputs = load_dataset(train_spec).inputs
    x = np.full((len(data.train_y), data.test_x.shape[1]), np.nan, np.float32)
    x[used] = cached_encode(load_encoder(encoder), [inputs[i] for i in used])
    print(f"[carryover] encoded {len(used)} of {len(x)} TRAIN rows (those the draws use)", file=sys.stderr,
          flush=True)
    return x


def run(encoder: str, methods: list[str], shots: list[int], draws: int, seed: int, drawn_only: bool = False,
        datasets: list[str] | None = None) -> dict:
    rows = []
    for name, (train, test) in DATASETS.items():
        if datasets and name not in datasets:
            continue
        data = prepare(str(train), str(test), encoder, need_train=not drawn_only)
        if drawn_only:
            data.train_x = drawn_train_vectors(data, str(train), encoder, shots, draws, seed)
        print(f"[carryover] {name}: {len(data.classes)} classes, {len(data.train_y)} train / {len(data.test_y)} "
              f"test, encoded in {data.encode_seconds:.1f} s", file=sys.stderr, flush=True)
        for k in shots:
            for m in methods:
                res = run_all_classes(m, data.train_x, data.train_y, data.test_x, data.test_y, n_shot=k,
                                      n_repeats=draws, seed=seed, class_vectors=data.class_vectors)
                rows.append({"dataset": name, "method": m, "shot": k, "draws": draws,
                             "accuracies": [round(float(a), 6) for a in res.accuracies],
                             "accuracy": round(res.accuracy, 6), "ci95": round(res.ci95, 6),
                             "seconds": round(res.seconds / draws, 4)})
                print(f"  K={k:<2} {m:<12} {100 * res.accuracy:6.2f} ± {100 * res.ci95:.2f}", file=sys.stderr,
                      flush=True)
    return {"encoder": encoder, "shots": shots, "draws": draws, "seed": seed, "baseline": BASELINE,
            "datasets": [d for d in DATASETS if not datasets or d in datasets], "train_encoded": "drawn rows only"
            if drawn_only else "all", "rows": rows}


def leave_one_dataset_out(payload: dict, candidates: list[str]) -> list[dict]:
    """For each (held-out data set, K): the candidate with the best mean gain over the baseline on the other
    data sets, and what it gives on the held-out one (paired per draw)."""
    acc = {(r["dataset"], r["method"], r["shot"]): np.asarray(r["accuracies"]) for r in payload["rows"]}
    out = []
    names = payload.get("datasets", list(DATASETS))
    if len(names) < 2:
        return out
    for held in names:
        for k in payload["shots"]:
            others = [d for d in names if d != held]
            gains = {m: np.mean([(acc[(d, m, k)] - acc[(d, BASELINE, k)]).mean() for d in others])
                     for m in candidates if all((d, m, k) in acc for d in names)}
            best = max(gains, key=gains.get)
            delta = acc[(held, best, k)] - acc[(held, BASELINE, k)]
            out.append({"held_out": held, "shot": k, "chosen": best, "gain_on_others": round(float(gains[best]), 6),
                        "accuracy": round(float(acc[(held, best, k)].mean()), 6),
                        "baseline": round(float(acc[(held, BASELINE, k)].mean()), 6),
                        "delta": round(float(delta.mean()), 6), "delta_ci95": round(confidence_interval(delta), 6)})
    return out


def markdown(payload: dict) -> str:
    rows, shots = payload["rows"], payload["shots"]
    lines = [f"# Carry-over: all classes, {payload['draws']} support draws, encoder `{payload['encoder']}`", "",
             "Accuracy (%) ± 95% CI over draws; Δ = paired difference to scikit-learn "
             "`LogisticRegression(C=10, max_iter=2000)` (`logreg`) on the same frozen embeddings and draws; "
             "seconds = fit + score per draw. `logreg-c1` is the default C = 1. Written by "
             "`benchmarks/carryover.py`.", ""]
    acc = {(r["dataset"], r["method"], r["shot"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for d in payload.get("datasets", list(DATASETS)):
        lines += [f"## {d}", "", "| method | " + " | ".join(f"{k}-shot" for k in shots) + " |",
                  "|---|" + "---:|" * len(shots)]
        for m in methods:
            cells = []
            for k in shots:
                r, b = acc.get((d, m, k)), acc.get((d, BASELINE, k))
                if r is None:
                    cells.append("—")
                    continue
                delta = np.asarray(r["accuracies"]) - np.asarray(b["accuracies"])
                cells.append(f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} (Δ {100 * delta.mean():+.2f}; "
                             f"{r['seconds']:.2f} s)")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Chosen leave-one-data-set-out", "",
              "For each held-out data set and K, the method with the best mean Δ on the other two, measured on the "
              "held-out one.", "", "| held out | K | chosen | Δ on the other two | accuracy | logreg | Δ (± 95% CI) |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for r in payload["lodo"]:
        lines.append(f"| {r['held_out']} | {r['shot']} | {r['chosen']} | {100 * r['gain_on_others']:+.2f} | "
                     f"{100 * r['accuracy']:.2f} | {100 * r['baseline']:.2f} | {100 * r['delta']:+.2f} ± "
                     f"{100 * r['delta_ci95']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: all three")
    ap.add_argument("--drawn-only", action="store_true",
                    help="encode only the TRAIN rows some draw uses (for slow encoders such as mpnet)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    if BASELINE not in args.methods:
        args.methods.insert(0, BASELINE)
    t0 = time.perf_counter()
    payload = run(args.encoder, args.methods, args.shots, args.draws, args.seed, args.drawn_only, args.datasets)
    candidates = [m for m in args.methods if m not in ("logreg-c1",)]
    payload["lodo"] = leave_one_dataset_out(payload, candidates)
    payload["wall_seconds"] = round(time.perf_counter() - t0, 1)
    stem = Path(args.out) / f"carryover{'_' + args.tag if args.tag else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(payload), encoding="utf-8")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
