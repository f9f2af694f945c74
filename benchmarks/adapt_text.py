"""Adaptation from unlabeled target data: zero-shot and 1-shot accuracy with and without each method, when the
unlabeled test pool (its texts, not its labels) is available. MiniLM; Banking77 and CLINC150 (in-scope).

    python benchmarks/adapt_text.py [--repeats 5]

Writes benchmarks/results/adapt_text.{json,md}. Hyperparameters: soft k-means temperature = the LOO-calibrated
temperature on the support set (fewshot.openset.detector.fit_temperature; 20 when there is no support to calibrate on,
e.g. zero-shot), 5 steps; CORAL shrinkage 0.1. None is chosen on test data.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from fewshot.adapt import ADAPT_METHODS, Adaptation
from fewshot.classifiers import ArraySupport, PrototypeClassifier
from fewshot.datasets import load_clinc150
from fewshot.encoders import load_encoder
from fewshot.encoders.cache import cached_encode
from fewshot.openset.detector import fit_temperature, loo_scores
from fewshot.templates import TEXT_TEMPLATES, expand, humanise_label

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"
OUT = Path(__file__).resolve().parent / "results"


def banking():
    def read(name):
        with open(SHARED / "banking77" / name, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [r["category"] for r in rows]
    return read("train.csv"), read("test.csv")


def clinc():
    path = SHARED / "clinc150" / "data_full.json"
    tr, te = load_clinc150(path, "train"), load_clinc150(path, "test")
    return (tr.inputs, tr.labels), (te.inputs, te.labels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    enc = load_encoder("minilm")
    rows = []
    for name, loader in (("banking77", banking), ("clinc150", clinc)):
        (train_x, train_y), (test_x, test_y) = loader()
        classes = sorted(set(train_y))
        col = {c: i for i, c in enumerate(classes)}
        ytr, yte = np.array([col[y] for y in train_y]), np.array([col[y] for y in test_y])
        xtr, xte = cached_encode(enc, train_x), cached_encode(enc, test_x)
        prompts = cached_encode(enc, [t for c in classes for t in expand(TEXT_TEMPLATES, humanise_label(c))])
        class_vectors = prompts.reshape(len(classes), len(TEXT_TEMPLATES), -1).mean(1)
        class_vectors /= np.linalg.norm(class_vectors, axis=1, keepdims=True)
        for shots in (0, 1):
            results = {m: [] for m in ("none",) + ADAPT_METHODS}
            seconds = {m: [] for m in results}
            for seed in range(args.repeats if shots else 1):
                rng = np.random.default_rng(seed)
                if shots:
                    idx = np.concatenate([rng.choice(np.flatnonzero(ytr == c), shots, replace=False)
                                          for c in range(len(classes))])
                    support = ArraySupport(xtr[idx], ytr[idx], len(classes), class_vectors)
                else:
                    support = ArraySupport(np.zeros((0, enc.dim), np.float32), np.zeros(0, np.int64),
                                           len(classes), class_vectors)
                s, t = loo_scores(support, "prototype")
                temperature = fit_temperature(s, t)
                for method in results:
                    t0 = time.perf_counter()
                    if method == "none":
                        pred = PrototypeClassifier().fit(support).scores(xte).argmax(1)
                    else:
                        a = Adaptation(method, temperature=temperature).fit(support, xte)
                        pred = PrototypeClassifier().fit(a.wrap(support)).scores(a.transform_queries(xte)).argmax(1)
                    seconds[method].append(time.perf_counter() - t0)
                    results[method].append(float((pred == yte).mean()))
            base = np.mean(results["none"])
            for method, accs in results.items():
                rows.append({"dataset": name, "shots": shots, "method": method, "repeats": len(accs),
                             "accuracy": float(np.mean(accs)),
                             "ci95": float(1.96 * np.std(accs) / np.sqrt(len(accs))),
                             "gain_points": float(100 * (np.mean(accs) - base)),
                             "seconds": float(np.mean(seconds[method]))})
    OUT.mkdir(exist_ok=True)
    (OUT / "adapt_text.json").write_text(json.dumps({"encoder": "minilm", "results": rows}, indent=1))
    lines = ["# Adaptation from the unlabeled test pool (labels unused), MiniLM, prototype classifier", "",
             "Zero-shot = class vectors from label names (4 templates); 1-shot = one train example per class plus "
             f"the label-name vector, {args.repeats} seeds. Command: `python benchmarks/adapt_text.py`.", "",
             "| data set | shots | adaptation | accuracy | ± CI95 | gain (points) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['shots']} | {r['method']} | {r['accuracy']:.4f} | {r['ci95']:.4f} | "
                     f"{r['gain_points']:+.2f} | {r['seconds']:.2f} |")
    (OUT / "adapt_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
