"""Open-set scores not shipped, beside the shipped default and the raw top cosine, on the splits of
``benchmarks/openset_carryover.py`` (same splits, same support draws, same frozen embeddings).

A screen of what else could lift the far-off cases (an engine over StackOverflow-20 against Banking77 or CLINC150
out-of-scope queries: AUROC 0.975-0.984 with the default, the issue's target 0.995). Each candidate is a per-query
score, higher = more in-scope, from the (n, C) prototype cosines ``S`` of the queries, the support examples ``X``
and the shipped generic sentences ``G`` (``fewshot.openset.generic_sentences``):

* ``raw``: max_c S (the baseline every open-set table carries); ``default``: the shipped ``OpenSetDetector()``;
* ``nn-k``: mean of the k highest cosines to single support examples (k = 1, 3, 10);
* ``nn-3+raw``: that (k = 3) plus the raw score;
* ``energy-T``: logsumexp(T · S) (T = 20, 50);
* ``generic-λ``: raw − λ · (mean of the 5 highest cosines to the generic sentences): generic text as a
  background class (λ = 0.25, 0.5).

Choosing: leave-one-data-set-out as in ``openset_carryover.py`` (admissible = AUROC ≥ raw − 0.003 on every split
not involving the held-out set; objective = mean gain over raw there), reported on the splits that involve it.

    .venv/bin/python benchmarks/openset_alternatives.py [--encoder minilm] [--draws 5] [--tag NAME]

writes benchmarks/results/openset_alternatives[_TAG].json and .md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openset_carryover import DATASETS, NEVER_WORSE, OUT, SHOTS, _known, load, splits  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from fewshot.classifiers import ArraySupport, make_classifier  # noqa: E402
from fewshot.openset import OpenSetDetector  # noqa: E402

RAW, DEFAULT = "raw", "default"


def candidate_scores(S: np.ndarray, queries: np.ndarray, support_x: np.ndarray, generic: np.ndarray,
                     detector: OpenSetDetector) -> dict[str, np.ndarray]:
    """(n, C) prototype scores, (n, d) queries, (m, d) support examples, (g, d) generic sentences → name → (n,)."""
    top = S.max(1)
    nearest = np.sort(queries @ support_x.T, axis=1)
    near_generic = np.sort(queries @ generic.T, axis=1)[:, -5:].mean(1)
    out = {RAW: top, DEFAULT: detector.ood_scores(S, queries)}
    for k in (1, 3, 10):
        out[f"nn-{k}"] = nearest[:, -k:].mean(1)
    out["nn-3+raw"] = out["nn-3"] + top
    for t in (20, 50):
        out[f"energy-{t}"] = logsumexp(t * S.astype(np.float64), axis=1)
    for lam in (0.25, 0.5):
        out[f"generic-{lam}"] = top - lam * near_generic
    return out


def run(encoder: str, draws: int) -> dict:
    D = load(encoder)
    per_split: dict = {}
    t0 = time.perf_counter()
    for sp in splits(D):
        d = D[sp["known"]]
        known_x, known_y, remap = _known(D, sp)
        queries = np.concatenate([known_x, sp["unknown"]]).astype(np.float32)
        in_scope = np.r_[np.ones(len(known_x)), np.zeros(len(sp["unknown"]))]
        aurocs: dict[str, list[float]] = {}
        for draw in range(draws):
            rng = np.random.default_rng(1000 * draw + 17)          # openset_carryover.run_one's draws
            idx = np.concatenate([rng.choice(np.flatnonzero(d["train_y"] == c), SHOTS, replace=False)
                                  for c in sp["classes"]])
            support = ArraySupport(d["train_x"][idx], remap[d["train_y"][idx]], len(sp["classes"]))
            S = make_classifier("prototype").fit(support).scores(queries)
            detector = OpenSetDetector().fit(support, "prototype")
            for name, score in candidate_scores(S, queries, d["train_x"][idx], D["generic_x"], detector).items():
                aurocs.setdefault(name, []).append(float(roc_auc_score(in_scope, score)))
        per_split[sp["name"]] = {"groups": sp["groups"], "family": sp["family"],
                                 "auroc": {k: float(np.mean(v)) for k, v in aurocs.items()},
                                 "auroc_per_draw": aurocs}
        print(f"[openset_alternatives] {sp['name']}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in per_split[sp["name"]]["auroc"].items()), file=sys.stderr, flush=True)
    names = list(next(iter(per_split.values()))["auroc"])
    lodo = []
    for held in DATASETS:
        select = [n for n, r in per_split.items() if held not in r["groups"]]
        report = [n for n, r in per_split.items() if held in r["groups"]]
        gain = {c: [per_split[n]["auroc"][c] - per_split[n]["auroc"][RAW] for n in select] for c in names}
        ok = [c for c in names if min(gain[c]) >= -NEVER_WORSE]
        chosen = max(ok, key=lambda c: float(np.mean(gain[c]))) if ok else RAW
        lodo.append({"held_out": held, "admissible": ok, "chosen": chosen,
                     "gain_on_selection": float(np.mean(gain[chosen])),
                     "held_out_delta": {n: per_split[n]["auroc"][chosen] - per_split[n]["auroc"][RAW] for n in report}})
    return {"encoder": encoder, "draws": draws, "shots": SHOTS, "seconds": time.perf_counter() - t0,
            "candidates": names, "splits": per_split, "lodo": lodo}


def markdown(res: dict) -> str:
    names = res["candidates"]
    lines = [f"# Open-set scores not shipped, beside the default and the raw top cosine (encoder `{res['encoder']}`)",
             "", f"Prototype classifier, {res['shots']} examples per known class, {res['draws']} support draws per "
             "split (means), the splits and draws of `benchmarks/openset_carryover.py`. Written by "
             f"`benchmarks/openset_alternatives.py` ({res['seconds']:.0f} s); the candidates are defined in its "
             "docstring. AUROC of in-scope vs unknown queries.", "",
             "| split | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for split, row in res["splits"].items():
        best = max(row["auroc"].values())
        lines.append(f"| {split} | " + " | ".join(
            (f"**{row['auroc'][c]:.4f}**" if row["auroc"][c] == best else f"{row['auroc'][c]:.4f}") for c in names) + " |")
    lines += ["", "Worst and mean AUROC difference to raw over the splits, and the far-off splits' lowest AUROC:", "",
              "| candidate | worst Δ vs raw | mean Δ vs raw | lowest far-off AUROC |", "|---|---:|---:|---:|"]
    for c in names:
        deltas = [r["auroc"][c] - r["auroc"][RAW] for r in res["splits"].values()]
        far = [r["auroc"][c] for r in res["splits"].values() if r["family"] == "far-off"]
        lines.append(f"| {c} | {min(deltas):+.4f} | {np.mean(deltas):+.4f} | {min(far):.4f} |")
    lines += ["", "## Leave-one-data-set-out choice", "", "| held out | chosen | gain on selection | Δ vs raw on its "
              "splits |", "|---|---|---:|---|"]
    for row in res["lodo"]:
        deltas = ", ".join(f"{n} {v:+.4f}" for n, v in row["held_out_delta"].items())
        lines.append(f"| {row['held_out']} | `{row['chosen']}` | {row['gain_on_selection']:+.4f} | {deltas} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    res = run(args.encoder, args.draws)
    out = OUT / ("openset_alternatives" + (f"_{args.tag}" if args.tag else ""))
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
