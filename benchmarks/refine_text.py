"""Refinement benchmark (issue 7): every refine method at 0/1/5/10 shots on Banking77 (all 77 classes) and
CLINC150 (in-scope, all 150 classes), MiniLM encoder.

Protocol ("all" mode): for each repeat r (seed r), K examples per class are sampled from TRAIN; every method is
fitted on them (plus the class-name prompt vectors) and evaluated on all of TEST. Mean ± 95% CI
(1.96·std/√R) over R repeats. Class names are humanised labels ('card_arrival' → 'card arrival') filled into
``fewshot.templates.TEXT_TEMPLATES``. Every hyperparameter is fixed in the code or chosen on the support set
(leave-one-out / cross-validation / held-out support split); the test split is only scored.

    python benchmarks/refine_text.py                       # frozen-embedding methods, 5 repeats
    python benchmarks/refine_text.py --methods encoder-ft --shots 1 5 10 --tag encoder

Writes benchmarks/results/refine_<tag>.json and .md.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot.classifiers import ArraySupport, make_classifier  # noqa: E402
from fewshot.encoders import load_encoder  # noqa: E402
from fewshot.encoders.cache import cached_encode  # noqa: E402
from fewshot.templates import TEXT_TEMPLATES, expand, humanise_label  # noqa: E402

DATA = Path(os.environ.get("FEWSHOT_DATA", ROOT.parent / "shared" / "data" / "text"))
FROZEN_METHODS = ["zero-shot", "prototype", "fusion", "linear", "finetune"]


def load_banking77() -> dict:
    def read(split):
        with open(DATA / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [r["category"] for r in rows]
    return {"name": "banking77", "train": read("train"), "test": read("test")}


def load_clinc150() -> dict:
    d = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    split = lambda k: ([t for t, _ in d[k]], [lab for _, lab in d[k]])  # noqa: E731
    return {"name": "clinc150", "train": split("train"), "test": split("test")}


def prepare(ds: dict, encoder) -> dict:
    """Encode train/test (through the shared cache) and the class-name prompt vectors."""
    (tr_x, tr_y), (te_x, te_y) = ds["train"], ds["test"]
    classes = sorted(set(tr_y))
    idx = {c: i for i, c in enumerate(classes)}
    prompts = [p for c in classes for p in expand(TEXT_TEMPLATES, humanise_label(c))]
    pv = cached_encode(encoder, prompts).reshape(len(classes), len(TEXT_TEMPLATES), -1).mean(1)
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    return {**ds, "classes": classes, "prompts": pv.astype(np.float32),
            "Xtr": cached_encode(encoder, tr_x), "ytr": np.array([idx[c] for c in tr_y]),
            "Xte": cached_encode(encoder, te_x), "yte": np.array([idx[c] for c in te_y])}


def sample_support(y: np.ndarray, n_classes: int, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` random TRAIN examples per class (seeded)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in range(n_classes)]
                          ) if shots else np.zeros(0, np.int64)


def run_frozen(method: str, d: dict, idx: np.ndarray) -> np.ndarray:
    sup = ArraySupport(d["Xtr"][idx], d["ytr"][idx], len(d["classes"]), d["prompts"])
    return make_classifier(method).fit(sup).scores(d["Xte"])


def run_encoder_ft(d: dict, idx: np.ndarray, seed: int, head: str = "linear") -> np.ndarray:
    from fewshot.training.text_finetune import finetune_encoder

    tr_texts = [d["train"][0][i] for i in idx]
    names = [humanise_label(c) for c in d["classes"]]
    res = finetune_encoder(tr_texts, d["ytr"][idx], class_names=names, seed=seed, refit=False,
                           show_progress_bar=False)  # as FewShotEngine.refine("encoder") does
    enc = res.encoder
    pv = enc.encode(expand_all(names)).reshape(len(names), len(TEXT_TEMPLATES), -1).mean(1)
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    sup = ArraySupport(enc.encode(tr_texts), d["ytr"][idx], len(names), pv.astype(np.float32))
    return make_classifier(head).fit(sup).scores(enc.encode(d["test"][0], batch_size=128))


def expand_all(names):
    return [p for n in names for p in expand(TEXT_TEMPLATES, n)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["banking77", "clinc150"])
    ap.add_argument("--methods", nargs="+", default=FROZEN_METHODS)
    ap.add_argument("--shots", nargs="+", type=int, default=[0, 1, 5, 10])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tag", default="frozen")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    encoder = load_encoder("minilm")
    loaders = {"banking77": load_banking77, "clinc150": load_clinc150}
    results = []
    for name in args.datasets:
        d = prepare(loaders[name](), encoder)
        C = len(d["classes"])
        for shots in args.shots:
            reps = 1 if shots == 0 else args.repeats  # 0 shots has no sampling: one deterministic run
            for method in args.methods:
                if shots == 0 and method == "encoder-ft":
                    continue
                accs, secs = [], []
                for r in range(reps):
                    idx = sample_support(d["ytr"], C, shots, seed=r)
                    t0 = time.perf_counter()
                    s = run_encoder_ft(d, idx, seed=r) if method == "encoder-ft" else run_frozen(method, d, idx)
                    secs.append(time.perf_counter() - t0)
                    accs.append(float(np.mean(np.argmax(s, 1) == d["yte"])))
                acc = float(np.mean(accs))
                ci = float(1.96 * np.std(accs) / np.sqrt(len(accs)))
                row = {"dataset": name, "mode": "all", "method": method, "way": C, "shot": shots,
                       "episodes": reps, "accuracy": acc, "ci95": ci, "seconds": float(np.mean(secs)),
                       "per_repeat": accs}
                results.append(row)
                print(f"{name:10s} {method:10s} {shots:2d}-shot  {100 * acc:6.2f} ± {100 * ci:4.2f}  "
                      f"({np.mean(secs):.2f} s/fit)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/refine_text.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"refine_{args.tag}.json").write_text(json.dumps(
        {"encoder": "minilm", "command": cmd.strip(), "results": results}, indent=1))
    lines = [f"# Refinement benchmark ({args.tag})", "", f"`{cmd.strip()}`", "",
             "Accuracy % on all of TEST, mean ± 95% CI over repeats (support sampled from TRAIN, seeds 0..R-1); "
             "seconds = mean fit+score time per repeat (cached encoding excluded for frozen methods).", "",
             "| dataset | method | " + " | ".join(f"{k}-shot" for k in args.shots) + " |",
             "|---|---|" + "---|" * len(args.shots)]
    for name in args.datasets:
        for method in args.methods:
            cells = []
            for k in args.shots:
                r = [x for x in results if x["dataset"] == name and x["method"] == method and x["shot"] == k]
                cells.append(f"{100 * r[0]['accuracy']:.2f} ± {100 * r[0]['ci95']:.2f} ({r[0]['seconds']:.1f}s)"
                             if r else "–")
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    (out / f"refine_{args.tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
