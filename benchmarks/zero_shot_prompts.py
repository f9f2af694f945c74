"""Zero-shot prompt templates chosen leave-one-data-set-out, scored on TRAIN only.

Zero-shot classification from label names: each class is the L2-normalised mean of its prompt templates filled
with the humanised label (``fewshot.templates.prompt_vectors``), every input goes to the class of highest cosine
(the engine's ``zero-shot`` classifier). Candidate template sets (``CANDIDATES``; "current" is the shipped
``fewshot.templates.TEXT_TEMPLATES``) are scored on the TRAIN split of Banking77, CLINC150 (in-scope) and
StackOverflow-20 — the selection data; zero-shot learns nothing from it. For each data set D the candidate with the
best mean TRAIN gain over "current" on the *other two* sets is chosen (leave-one-data-set-out) and reported on D's
TEST split beside "current"; TEST accuracies of every candidate are listed too, for reading only: nothing is chosen
on them.

    .venv/bin/python benchmarks/zero_shot_prompts.py [--encoder minilm] [--tag NAME]

writes benchmarks/results/zero_shot_prompts[_TAG].json and .md (embeddings come from the disk cache after the
first run).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fewshot.encoders import load_encoder
from fewshot.encoders.cache import cached_encode
from fewshot.evaluation.bench import prepare
from fewshot.templates import TEXT_TEMPLATES, humanise_label, prompt_vectors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from carryover import DATASETS  # noqa: E402 - the same data sets and splits

#: name → template set ('{}' is the humanised label); "current" is what fewshot ships
CANDIDATES: dict[str, tuple[str, ...]] = {
    "current": tuple(TEXT_TEMPLATES),
    "name only": ("{}",),
    "question": ("{}", "A question about {}.", "I have a question about {}.", "Can you help me with {}?"),
    "request": ("{}", "I need help with {}.", "Help me with {}.", "Question about {}."),
    "topic": ("{}", "This text is about {}.", "Topic: {}.", "Something about {}."),
    "user message": ("{}", "A user message about {}.", "Someone asking about {}.", "A customer asking about {}."),
    "question only": ("A question about {}.",),
    "eight": tuple(TEXT_TEMPLATES) + ("A question about {}.", "I have a question about {}.",
                                      "Can you help me with {}?", "This text is about {}."),
}


def accuracy(x: np.ndarray, y: np.ndarray, class_vectors: np.ndarray) -> float:
    """Share of the (n, d) unit vectors x whose nearest (C, d) class vector by cosine is their (n,) class y."""
    return float(((x @ class_vectors.T).argmax(1) == y).mean())


def run(encoder_name: str) -> dict:
    encoder = load_encoder(encoder_name)
    cells: dict[str, dict[str, dict[str, float]]] = {}
    for name, (train, test) in DATASETS.items():
        data = prepare(str(train), str(test), encoder_name)
        assert data.train_x is not None
        phrases = [humanise_label(c) for c in data.classes]
        cells[name] = {}
        for cand, templates in CANDIDATES.items():
            vectors = prompt_vectors(lambda texts: cached_encode(encoder, texts), templates, phrases)
            cells[name][cand] = {"train": accuracy(data.train_x, data.train_y, vectors),
                                 "test": accuracy(data.test_x, data.test_y, vectors)}
            print(f"[zero_shot_prompts] {name} {cand!r}: TRAIN {100 * cells[name][cand]['train']:.2f} "
                  f"TEST {100 * cells[name][cand]['test']:.2f}", file=sys.stderr, flush=True)
    lodo = {}
    for held in cells:
        others = [d for d in cells if d != held]
        gain = {c: float(np.mean([cells[d][c]["train"] - cells[d]["current"]["train"] for d in others]))
                for c in CANDIDATES}
        chosen = max(gain, key=lambda c: (gain[c], c == "current"))
        lodo[held] = {"chosen": chosen, "train_gain_on_others": gain[chosen],
                      "test": cells[held][chosen]["test"], "current_test": cells[held]["current"]["test"]}
    return {"encoder": encoder.name, "candidates": {k: list(v) for k, v in CANDIDATES.items()}, "cells": cells,
            "lodo": lodo}


def markdown(result: dict) -> str:
    sets = list(result["cells"])
    lines = ["# Zero-shot prompt templates, chosen leave-one-data-set-out on TRAIN", "",
             f"Encoder `{result['encoder']}`; every class is the normalised mean of its templates filled with the "
             "humanised label; accuracy = share of inputs whose nearest class vector is their class. Choosing reads "
             "TRAIN only (zero-shot learns nothing from it); TEST is shown for reading. Written by "
             "`benchmarks/zero_shot_prompts.py`.", "",
             "## Leave-one-data-set-out", "",
             "| held-out set | chosen on the other two (mean TRAIN gain vs current) | TEST chosen | TEST current | Δ |",
             "|---|---|---:|---:|---:|"]
    for d, row in result["lodo"].items():
        lines.append(f"| {d} | {row['chosen']} ({100 * row['train_gain_on_others']:+.2f}) | {100 * row['test']:.2f} "
                     f"| {100 * row['current_test']:.2f} | {100 * (row['test'] - row['current_test']):+.2f} |")
    lines += ["", "## Every candidate (TRAIN / TEST accuracy, %)", "",
              "| candidate | templates | " + " | ".join(sets) + " |",
              "|---|---|" + "---:|" * len(sets)]
    for cand, templates in result["candidates"].items():
        cells = " | ".join(f"{100 * result['cells'][d][cand]['train']:.2f} / {100 * result['cells'][d][cand]['test']:.2f}"
                           for d in sets)
        shown = "; ".join(f"`{t}`" for t in templates)
        lines.append(f"| {cand} | {shown} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    result = run(args.encoder)
    out = Path(__file__).resolve().parent / "results" / f"zero_shot_prompts{'_' + args.tag if args.tag else ''}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
