"""Open-set rejection on small apps (issue 15, item 4): 3-10 classes, 0-5 examples each, some description-only.

What an application developer starts with: a handful of intents, a few examples each, some only described. For
each development set (Banking77, CLINC150, StackOverflow-20) ``--apps`` apps are drawn (fixed seeds), a third in
each regime: ``tiny`` (0-1 examples per class), ``few`` (0-3) and ``small`` (2-5); a class has its humanised label
as description when it has no example, else with probability 1/2. In-scope queries: up to 30 TEST queries per
class; near unknowns: 300 TEST queries of the data set's other classes; far unknowns: 300 queries of the other
data sets (+ CLINC150's out-of-scope queries). Frozen MiniLM embeddings (fewshot's disk cache), prototype
classifier, ``OpenSetDetector(...).fit(support, "prototype", background=<generic sentences>)`` as the engine calls
it, ``target="coverage", keep=0.97``.

Rules compared on the same apps: ``shipped`` (the library as it is: below ``SMALL_SUPPORT_LOO`` LOO examples the
threshold on the top cosine is (m·LOO + p·zero-shot) / (m + p) with p = ``SMALL_SUPPORT_PRIOR``), ``loo-only``
(the rule it replaced: the LOO quantile alone from 5 LOO examples, the default score; the zero-shot threshold
below 5) and the blend with other weights p. The rule (loo-only or a p) is chosen leave-one-data-set-out: on the
two other data sets, the best mean J = unknowns rejected (mean of near and far) − 2 · in-scope rejected.
Also: whether acceptance follows the confidence shown (the share of rejected inputs shown a higher confidence than
some accepted one, ``discord``).

    .venv/bin/python benchmarks/openset_small.py [--apps 60]

writes benchmarks/results/openset_small.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from carryover import DATASETS  # noqa: E402
from openset_carryover import load  # noqa: E402

from fewshot._core import softmax  # noqa: E402
from fewshot.classifiers import ArraySupport, make_classifier  # noqa: E402
from fewshot.openset import DEFAULT_KEEP, OpenSetDetector  # noqa: E402
from fewshot.openset.background import zero_shot_threshold  # noqa: E402
from fewshot.openset.detector import SMALL_SUPPORT_LOO, SMALL_SUPPORT_PRIOR, loo_scores  # noqa: E402

REGIMES = {"tiny": [0, 1], "few": [0, 1, 2, 3], "small": [2, 3, 5]}
PRIORS = (0, 3, 5, 10, 20)
PER_CLASS, NEAR, FAR = 30, 300, 300
OUT = Path(__file__).resolve().parent / "results"


def draw_app(D: dict, name: str, app: int) -> dict:
    """One app: its support (examples from TRAIN, descriptions = prompt vectors of humanised labels) and queries."""
    d = D[name]
    rng = np.random.default_rng(7000 + 97 * app + len(name))
    regime = list(REGIMES)[app % 3]
    C = int(rng.integers(3, 11))
    classes = rng.choice(len(d["classes"]), C, replace=False)
    shots = rng.choice(REGIMES[regime], C)
    if (shots == 0).all():
        shots[0] = 1
    xs, ys, described = [], [], np.zeros(C, bool)
    for j, (c, k) in enumerate(zip(classes, shots)):
        described[j] = k == 0 or rng.random() < 0.5
        if k:
            xs.append(d["train_x"][rng.choice(np.flatnonzero(d["train_y"] == c), k, replace=False)])
            ys += [j] * int(k)
    support = ArraySupport(np.concatenate(xs) if xs else np.zeros((0, d["train_x"].shape[1]), np.float32),
                           np.array(ys, np.int64), C, d["class_vectors"][classes], described)
    inside = np.flatnonzero(np.isin(d["test_y"], classes))
    inside = rng.choice(inside, min(len(inside), PER_CLASS * C), replace=False)
    near = d["test_x"][rng.choice(np.flatnonzero(~np.isin(d["test_y"], classes)), NEAR, replace=False)]
    pool = np.concatenate([D[m]["test_x"] for m in DATASETS if m != name]
                          + ([D["clinc150_oos_test_x"]] if name != "clinc150" else []))
    far = pool[rng.choice(len(pool), FAR, replace=False)]
    position = np.full(len(d["classes"]), -1, np.int64)
    position[classes] = np.arange(C)                                  # data-set class → the app's class index
    return {"regime": regime, "support": support, "n_in": len(inside), "truth": position[d["test_y"][inside]],
            "queries": np.concatenate([d["test_x"][inside], near, far]).astype(np.float32),
            "classes": int(C), "examples": int(shots.sum())}


def measure(accepted: np.ndarray, correct: np.ndarray, n_in: int) -> dict:
    return {"coverage": float(accepted[:n_in].mean()),
            "drop_pts": float(100 * (correct.mean() - (correct & accepted[:n_in]).mean())),
            "near_rejected": float(1 - accepted[n_in:n_in + NEAR].mean()),
            "far_rejected": float(1 - accepted[n_in + NEAR:].mean())}


def discord(shown: np.ndarray, accepted: np.ndarray) -> float:
    """For each rejected input, the share of accepted inputs shown a lower confidence than it; their mean over the
    rejected inputs (0 = acceptance follows the confidence shown)."""
    if accepted.all() or not accepted.any():
        return 0.0
    ranked = np.sort(shown[accepted])
    return float(np.mean(np.searchsorted(ranked, shown[~accepted], side="left") / len(ranked)))


def run_app(D: dict, app: dict) -> dict:
    support, queries, n_in = app["support"], app["queries"], app["n_in"]
    clf = make_classifier("prototype").fit(support)
    scores = clf.scores(queries)
    top = scores.max(1)
    correct = scores[:n_in].argmax(1) == app["truth"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = OpenSetDetector().fit(support, "prototype", background=D["generic_x"])
        confidence, accepted = det.assess(scores, queries)
        # the rule this replaced: LOO alone from 5 LOO examples (default score), zero-shot below
        old = OpenSetDetector().fit(support, "prototype")
        old_accepted = old.accept(scores, queries) if old.threshold_source_ == "loo" else None
    loo, truth = loo_scores(support, "prototype")
    m = len(truth)
    prior, _ = zero_shot_threshold(clf, support, D["generic_x"])
    assert prior is not None
    if old_accepted is None:
        old_accepted = top >= prior
    shown = confidence.max(1) if confidence is not None else softmax(scores * det.temperature_).max(1)
    out = {"regime": app["regime"], "classes": app["classes"], "examples": app["examples"], "loo": m,
           "accuracy": float(correct.mean()), "threshold_source": det.threshold_source_,
           "calibrated": det.platt_ is not None, "rules": {
               "shipped": measure(accepted, correct, n_in), "loo-only": measure(old_accepted, correct, n_in)},
           "discord": {"shipped": discord(shown, accepted)}}
    old_conf = old.confidences(scores, queries) if old.platt_ is not None else None
    old_shown = old_conf.max(1) if old_conf is not None else softmax(scores * old.temperature_).max(1)
    out["discord"]["loo-only"] = discord(old_shown, old_accepted)
    loo_threshold = float(np.quantile(loo.max(1), 1 - DEFAULT_KEEP)) if m else 0.0
    for p in PRIORS:
        threshold = (m * loo_threshold + p * prior) / (m + p) if m + p > 0 else prior
        out["rules"][f"p={p}"] = measure(top >= threshold, correct, n_in)
    return out


def summarise(rows: list[dict]) -> dict:
    """Means per (data set, regime, rule)."""
    out: dict = {}
    for name in DATASETS:
        for regime in REGIMES:
            sel = [r for r in rows if r["dataset"] == name and r["regime"] == regime]
            if not sel:
                continue
            cell: dict = {"apps": len(sel), "loo": float(np.mean([r["loo"] for r in sel])),
                          "accuracy": float(np.mean([r["accuracy"] for r in sel])),
                          "calibrated": float(np.mean([r["calibrated"] for r in sel])), "rules": {}, "discord": {}}
            for rule in sel[0]["rules"]:
                cell["rules"][rule] = {k: float(np.mean([r["rules"][rule][k] for r in sel]))
                                       for k in sel[0]["rules"][rule]}
            for rule in sel[0]["discord"]:
                cell["discord"][rule] = float(np.mean([r["discord"][rule] for r in sel]))
            out[f"{name}/{regime}"] = cell
    return out


COST = 2.0      # an in-scope input rejected costs this many unknowns accepted (as openset_carryover.py's λ choice)


def objective(cell: dict) -> float:
    """J = mean share of unknowns rejected (near and far) − COST · share of in-scope inputs rejected."""
    return 0.5 * (cell["near_rejected"] + cell["far_rejected"]) - COST * (1.0 - cell["coverage"])


def lodo(summary: dict) -> list[dict]:
    """The rule leave-one-data-set-out: among ``loo-only`` and the blends p, the best mean J on the other two data
    sets' cells; reported on the held-out one's, beside the shipped p and loo-only (also |coverage − keep|)."""
    candidates = ["loo-only"] + [f"p={p}" for p in PRIORS]
    rows = []
    for held in DATASETS:
        def j(rule: str, names: list[str]) -> float:
            return float(np.mean([objective(summary[n]["rules"][rule]) for n in names]))

        def gap(rule: str, names: list[str]) -> float:
            return float(np.mean([abs(summary[n]["rules"][rule]["coverage"] - DEFAULT_KEEP) for n in names]))
        select = [n for n in summary if not n.startswith(held + "/")]
        report = [n for n in summary if n.startswith(held + "/")]
        chosen = max(candidates, key=lambda rule: j(rule, select))
        shipped = f"p={SMALL_SUPPORT_PRIOR}"
        rows.append({"held_out": held, "chosen": chosen, "j_selection": j(chosen, select),
                     "j_held_out": j(chosen, report), "j_held_out_shipped": j(shipped, report),
                     "j_held_out_loo_only": j("loo-only", report), "gap_held_out_shipped": gap(shipped, report),
                     "gap_held_out_loo_only": gap("loo-only", report)})
    return rows


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = ["# Open-set rejection on small apps — `OpenSetDetector` below "
             f"{SMALL_SUPPORT_LOO} leave-one-out examples", "",
             f"Written by `benchmarks/openset_small.py` from the code as it is ({res['seconds']:.0f} s): "
             f"{res['apps']} apps per data set (a third per regime: tiny = 0-1 examples per class, few = 0-3, small = "
             "2-5; 3-10 classes; a class without examples has its label as description), MiniLM, prototype "
             f"classifier, `keep={DEFAULT_KEEP}` (requested coverage). Queries: ≤ {PER_CLASS} in-scope per class, "
             f"{NEAR} near unknowns (other classes of the same data set), {FAR} far unknowns (other data sets).",
             "", f"Shipped: threshold on the top cosine = (m·LOO + p·zero-shot) / (m + p), p = {SMALL_SUPPORT_PRIOR}; "
             "loo-only: the rule it replaced (LOO alone from 5 LOO examples, default score; zero-shot below 5). "
             "Cells: in-scope coverage / accuracy drop (points) / near unknowns rejected / far unknowns rejected.", "",
             "| data set / regime | apps | mean LOO | accuracy | calibrated | shipped | loo-only | "
             + " | ".join(f"p={p}" for p in PRIORS) + " | discord shipped / loo-only |",
             "|---|---:|---:|---:|---:|---|---|" + "---|" * len(PRIORS) + "---:|"]
    for name, c in s.items():
        def cell(rule: str, c: dict = c) -> str:
            r = c["rules"][rule]
            return f"{r['coverage']:.3f} / {r['drop_pts']:.1f} / {r['near_rejected']:.2f} / {r['far_rejected']:.2f}"
        lines.append(f"| {name} | {c['apps']} | {c['loo']:.1f} | {100 * c['accuracy']:.1f} | {c['calibrated']:.2f} | "
                     f"{cell('shipped')} | {cell('loo-only')} | " + " | ".join(cell(f"p={p}") for p in PRIORS)
                     + f" | {c['discord']['shipped']:.3f} / {c['discord']['loo-only']:.3f} |")
    lines += ["", "`calibrated`: share of apps whose confidences come from a fitted Platt map (else, with fewer than 5 "
              "LOO examples, the shipped rule shows sigmoid(s · (top − threshold)), 0.5 at the threshold; the rule it "
              "replaced showed softmax probabilities). `discord`: mean over rejected inputs of the share of accepted inputs shown a lower "
              "confidence (0 = acceptance follows the confidence shown).", "",
              f"## The rule leave-one-data-set-out (objective J = mean unknowns rejected − {COST:g} · in-scope "
              "rejected, over the other two data sets' regimes)", "",
              "| held out | chosen | J selection | J held out: chosen / shipped / loo-only | "
              "|coverage − keep| held out: shipped / loo-only |", "|---|---|---:|---|---|"]
    for r in res["lodo"]:
        lines.append(f"| {r['held_out']} | {r['chosen']} | {r['j_selection']:.3f} | {r['j_held_out']:.3f} / "
                     f"{r['j_held_out_shipped']:.3f} / {r['j_held_out_loo_only']:.3f} | "
                     f"{r['gap_held_out_shipped']:.3f} / {r['gap_held_out_loo_only']:.3f} |")
    lines += ["", f"LODO choices: {', '.join(r['chosen'] for r in res['lodo'])}; shipped p = {SMALL_SUPPORT_PRIOR}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apps", type=int, default=60, help="apps per data set")
    ap.add_argument("--encoder", default="minilm")
    args = ap.parse_args()
    t0 = time.time()
    D = load(args.encoder)
    rows = []
    for name in DATASETS:
        for a in range(args.apps):
            row = run_app(D, draw_app(D, name, a))
            row["dataset"], row["app"] = name, a
            rows.append(row)
        print(f"[openset_small] {name}: {args.apps} apps ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    summary = summarise(rows)
    res = {"encoder": args.encoder, "apps": args.apps, "keep": DEFAULT_KEEP, "prior": SMALL_SUPPORT_PRIOR,
           "small_support_loo": SMALL_SUPPORT_LOO, "summary": summary, "lodo": lodo(summary), "rows": rows,
           "seconds": time.time() - t0}
    OUT.mkdir(exist_ok=True)
    (OUT / "openset_small.json").write_text(json.dumps(res, indent=1))
    (OUT / "openset_small.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
