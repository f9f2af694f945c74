"""``fewshot demo``: the README's main job — 10 Banking77 intents, classify held-back queries, save, reload."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

NAME = "demo"
HELP = "register 10 Banking77 intents, classify held-back queries, save and reload"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="where to save the demo engine (default: a temporary directory)")


def run(args: argparse.Namespace) -> int:
    from fewshot.datasets import banking77_sample
    from fewshot.engine import FewShotEngine
    from fewshot.templates import humanise_label

    support, queries = banking77_sample()
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
