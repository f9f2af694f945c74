"""Transductive adaptation to the unlabeled TEST pool: ``anchored-kmeans`` against ``recenter+soft-kmeans``, no
adaptation, and the plain baselines.

Data sets: Banking77, CLINC150 in-scope, StackOverflow-20 (``carryover.DATASETS``), frozen ``minilm`` embeddings
(fewshot's cache), all classes, K ∈ {0, 1, 5, 10} TRAIN shots per class drawn exactly as ``benchmarks/carryover.py``
draws them (``sample_shots(train_y, classes, K, 5, seed=0)``), all of TEST scored, and all of TEST (its inputs,
never its labels) as the unlabeled pool. Rows:

* baselines on the same embeddings and draws: nearest prototype of the examples and scikit-learn
  ``LogisticRegression(C=10, max_iter=2000)`` (``logreg``), both without the class names;
* no adaptation: ``zero-shot`` (K = 0), and ``prototype`` / ``linear`` with the class-name prompt vectors;
* ``recenter+soft-kmeans`` and ``anchored-kmeans`` (defaults, and ``balanced=True``), fitted as the engine fits
  them (``fewshot.engine.lifecycle.fit_adaptation``, support-calibrated temperature where the engine uses one),
  scored by ``zero-shot`` at K = 0 and ``prototype`` otherwise (and ``linear`` on top at ``--linear-on-top`` K).

The constants of ``anchored-kmeans`` (anchor, name_weight, temperature) are chosen leave-one-data-set-out: for each
held-out set, the grid point with the best mean accuracy over the other two sets and all four K, reported on the
held-out set. An imbalanced-pool check (class shares log-uniform in [0.1, 1], i.e. 10x imbalance; and a small,
harsh 1/(rank+1) pool that triggers the small-pool fallback) shows when ``balanced=True`` hurts.

    .venv/bin/python benchmarks/transductive.py [--grid-only] [--linear-on-top 10] [--md-only]

writes benchmarks/results/transductive.json and .md (``--grid-only``: the LODO grid alone, to stdout).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from carryover import DATASETS  # noqa: E402

from fewshot.adapt import ANCHOR, ANCHORED_TEMPERATURE, NAME_WEIGHT, Adaptation  # noqa: E402
from fewshot.classifiers import ArraySupport, make_classifier  # noqa: E402
from fewshot.engine.lifecycle import fit_adaptation  # noqa: E402
from fewshot.evaluation.bench import prepare  # noqa: E402
from fewshot.evaluation.episodes import run_all_classes, sample_shots  # noqa: E402

SHOTS, DRAWS, SEED = (0, 1, 5, 10), 5, 0
GRID = {"anchor": (0.05, 0.1, 0.15, 0.25), "name_weight": (1.0, 1.5, 3.0), "temperature": (20.0, 50.0)}
RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def support_of(d, idx: np.ndarray | None) -> ArraySupport:
    """The draw's support: (C·K,) TRAIN rows ``idx`` (None: zero-shot) plus every class's prompt vector."""
    c = len(d.classes)
    if idx is None:
        return ArraySupport(np.zeros((0, d.test_x.shape[1]), np.float32), np.zeros(0, np.int64), c, d.class_vectors)
    return ArraySupport(d.train_x[idx], d.train_y[idx], c, d.class_vectors)


def accuracy(classifier: str, support, queries: np.ndarray, truth: np.ndarray, adaptation=None) -> float:
    if adaptation is not None:
        support, queries = adaptation.wrap(support), adaptation.transform_queries(queries)
    return float((make_classifier(classifier).fit(support).scores(queries).argmax(1) == truth).mean())


def engine_adapted(method: str, options: dict, support, pool: np.ndarray, classifier: str):
    """The adaptation as ``FewShotEngine.adapt`` fits it for a training-free classifier (calibrated)."""
    return fit_adaptation(support, make_classifier(classifier), pool, method, options, calibrated=True)


def draws_of(d, k: int) -> list[np.ndarray | None]:
    if k == 0:
        return [None]
    return [r.reshape(-1) for r in sample_shots(d.train_y, np.arange(len(d.classes)), k, DRAWS, SEED)]


def grid_configs():
    keys = list(GRID)
    return [dict(zip(keys, v)) for v in itertools.product(*(GRID[k] for k in keys))]


def cfg_name(cfg: dict) -> str:
    return f"anchor={cfg['anchor']} name_weight={cfg['name_weight']} T={cfg['temperature']:g}"


def run_grid(d, name: str) -> dict[str, dict[int, list[float]]]:
    out: dict[str, dict[int, list[float]]] = {}
    for k in SHOTS:
        clf = "zero-shot" if k == 0 else "prototype"
        for idx in draws_of(d, k):
            sup = support_of(d, idx)
            for cfg in grid_configs():
                if k == 0 and cfg["name_weight"] != GRID["name_weight"][0]:
                    continue  # the name weight only mixes names with examples
                a = Adaptation("anchored-kmeans", **cfg).fit(sup, d.test_x)
                acc = accuracy(clf, sup, d.test_x, d.test_y, a)
                targets = [cfg_name(c) for c in grid_configs() if all(c[x] == cfg[x] for x in cfg if x != "name_weight")]\
                    if k == 0 else [cfg_name(cfg)]
                for t in targets:
                    out.setdefault(t, {}).setdefault(k, []).append(acc)
    log(f"[transductive] {name}: grid of {len(grid_configs())} done")
    return out


def lodo(grid: dict[str, dict[str, dict[int, list[float]]]]) -> dict:
    names = list(grid)
    mean = {n: {c: {k: 100 * float(np.mean(v)) for k, v in ks.items()} for c, ks in grid[n].items()} for n in names}
    configs = list(mean[names[0]])
    out = {"pooled": [], "per_shot": [], "in_sample": None}
    for held in names:
        other = [n for n in names if n != held]
        best = max(configs, key=lambda c: np.mean([mean[o][c][k] for o in other for k in SHOTS]))
        out["pooled"].append({"held_out": held, "chosen": best,
                              "other_two": round(float(np.mean([mean[o][best][k] for o in other for k in SHOTS])), 2),
                              "held_out_accuracy": {str(k): round(mean[held][best][k], 2) for k in SHOTS}})
        for k in SHOTS:
            b = max(configs, key=lambda c: np.mean([mean[o][c][k] for o in other]))
            out["per_shot"].append({"held_out": held, "shot": k, "chosen": b,
                                    "held_out_accuracy": round(mean[held][b][k], 2)})
    chosen = [dict(kv.split("=") for kv in r["chosen"].split()) for r in out["pooled"]]
    out["majority"] = {k: max(set(c[k] for c in chosen), key=[c[k] for c in chosen].count) for k in chosen[0]}
    out["in_sample"] = max(configs, key=lambda c: np.mean([mean[n][c][k] for n in names for k in SHOTS]))
    return out


def main_rows(d, name: str, linear_on_top: list[int]) -> list[dict]:
    rows: list[dict] = []
    c = len(d.classes)

    def add(method: str, k: int, accs: list[float], seconds: float) -> None:
        rows.append({"dataset": name, "method": method, "shot": k, "accuracies": [round(a, 6) for a in accs],
                     "accuracy": round(float(np.mean(accs)), 6), "seconds": round(seconds / len(accs), 3)})
        log(f"  {name} K={k:<2} {method:<38} {100 * np.mean(accs):6.2f}")

    for k in SHOTS:
        if k:
            for m, cv in (("prototype (examples only)", None), ("logreg", None), ("linear", d.class_vectors)):
                t0 = time.perf_counter()
                res = run_all_classes(m.split()[0], d.train_x, d.train_y, d.test_x, d.test_y, n_shot=k,
                                      n_repeats=DRAWS, seed=SEED, class_vectors=cv)
                add(m, k, [float(a) for a in res.accuracies], time.perf_counter() - t0)
        clf = "zero-shot" if k == 0 else "prototype"
        variants = [(clf, None, None, {}), (f"recenter+soft-kmeans + {clf}", "recenter+soft-kmeans", clf, {}),
                    (f"anchored-kmeans + {clf}", "anchored-kmeans", clf, {}),
                    (f"anchored-kmeans balanced + {clf}", "anchored-kmeans", clf, {"balanced": True})]
        if k in linear_on_top:
            variants.append(("anchored-kmeans + linear", "anchored-kmeans", "linear", {}))
        for label, method, scorer, options in variants:
            accs, t0 = [], time.perf_counter()
            for idx in draws_of(d, k):
                sup = support_of(d, idx)
                a = None if method is None else engine_adapted(method, options, sup, d.test_x, scorer or clf)
                accs.append(accuracy(scorer or clf, sup, d.test_x, d.test_y, a))
            add(label, k, accs, time.perf_counter() - t0)
    assert len(np.unique(d.test_y)) == c
    return rows


def imbalance_rows(d, name: str) -> list[dict]:
    """Pools drawn from TEST with skewed class shares; accuracy on the pool itself."""
    rng = np.random.default_rng(SEED)
    c = len(d.classes)
    pools = {}
    keep = 0.1 ** (rng.permutation(c) / (c - 1))                      # 10x: shares log-uniform in [0.1, 1]
    pools["10x imbalance"] = rng.random(len(d.test_y)) < keep[d.test_y]
    harsh = 1.0 / (rng.permutation(c) + 1.0)                          # 1/(rank+1), ~0.05 of TEST
    pools["harsh 1/(rank+1), small"] = rng.random(len(d.test_y)) < 0.05 * harsh[d.test_y] / harsh.mean()
    out = []
    for pool_name, m in pools.items():
        x, y = d.test_x[m], d.test_y[m]
        for k in (0, 1):
            clf = "zero-shot" if k == 0 else "prototype"
            variants = [(clf, None, {})] + ([("linear", None, {})] if k else []) + [
                ("recenter+soft-kmeans", "recenter+soft-kmeans", {}), ("anchored-kmeans", "anchored-kmeans", {}),
                ("anchored-kmeans balanced", "anchored-kmeans", {"balanced": True})]
            for label, method, options in variants:
                accs, fallback = [], False
                for idx in draws_of(d, k):
                    sup = support_of(d, idx)
                    scorer = "linear" if label == "linear" else clf
                    a = None if method is None else engine_adapted(method, options, sup, x, scorer)
                    fallback = fallback or bool(a is not None and a.fallback_)
                    accs.append(accuracy(scorer, sup, x, y, a))
                out.append({"dataset": name, "pool": pool_name, "pool_size": int(m.sum()),
                            "classes_present": int(len(np.unique(y))), "shot": k, "method": label,
                            "accuracy": round(float(np.mean(accs)), 6), "fallback": fallback})
    return out


def paired(rows: list[dict], dataset: str, k: int, method: str, ref: str) -> str:
    r = {x["method"]: x for x in rows if x["dataset"] == dataset and x["shot"] == k}
    if method not in r or ref not in r:
        return ""
    diff = 100 * (np.asarray(r[method]["accuracies"]) - np.asarray(r[ref]["accuracies"]))
    ci = 1.96 * diff.std() / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return f"{diff.mean():+.2f} ± {ci:.2f}"


def write_md(result: dict) -> str:
    rows, names = result["rows"], result["datasets"]
    md = ["# Transductive adaptation to the unlabeled TEST pool (`minilm`, all classes, 5 draws)", "",
          "Accuracy (%) on all of TEST, mean over the 5 support draws of `benchmarks/carryover.py` (0 shots: one "
          "run). The pool is all of TEST (inputs only). Δ = paired difference to scikit-learn "
          "`LogisticRegression(C=10, max_iter=2000)` (`logreg`) on the same frozen embeddings and draws, ± 95% CI "
          "over draws; at 0 shots Δ is to `zero-shot` (no adaptation). Adapted rows are fitted as "
          "`FewShotEngine.adapt` fits them (`lifecycle.fit_adaptation`) and scored by the classifier after `+`. "
          f"`anchored-kmeans` defaults: anchor={result['defaults']['anchor']}, name_weight="
          f"{result['defaults']['name_weight']}, temperature={result['defaults']['temperature']:g}, steps=3. "
          "Written by `benchmarks/transductive.py`.", ""]
    for n in names:
        md += [f"## {n}", "", "| method | " + " | ".join(f"{k}-shot" for k in SHOTS) + " |",
               "|---|" + "---:|" * len(SHOTS)]
        methods = list(dict.fromkeys(r["method"] for r in rows if r["dataset"] == n))
        rank = ["prototype (examples only)", "logreg", "zero-shot", "prototype", "linear", "recenter+soft-kmeans",
                "anchored-kmeans +", "anchored-kmeans balanced", "anchored-kmeans + linear"]
        order = sorted(methods, key=lambda m: max(i for i, p in enumerate(rank) if m == p or m.startswith(p))
                       if any(m == p or m.startswith(p) for p in rank) else len(rank))
        for m in order:
            cells = []
            for k in SHOTS:
                r = [x for x in rows if x["dataset"] == n and x["shot"] == k and x["method"] == m]
                if not r:
                    cells.append("")
                    continue
                ref = "logreg" if k else "zero-shot"
                d = paired(rows, n, k, m, ref) if m != ref else ""
                cells.append(f"{100 * r[0]['accuracy']:.2f}" + (f" (Δ {d})" if d else ""))
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        md.append("")
    lo = result["lodo"]
    md += ["## Leave-one-data-set-out choice of the anchored-kmeans constants", "",
           "Grid: " + ", ".join(f"{k} ∈ {list(v)}" for k, v in GRID.items()) + " (steps = 3). For each held-out "
           "set, the grid point with the best mean accuracy over the other two sets and all four K, then its "
           "accuracy on the held-out set (prototype scoring; zero-shot at K = 0).", "",
           "| held out | chosen on the other two | their mean | " + " | ".join(f"held-out {k}-shot" for k in SHOTS)
           + " |", "|---|---|---:|" + "---:|" * len(SHOTS)]
    for r in lo["pooled"]:
        md.append(f"| {r['held_out']} | `{r['chosen']}` | {r['other_two']:.2f} | "
                  + " | ".join(f"{r['held_out_accuracy'][str(k)]:.2f}" for k in SHOTS) + " |")
    md += ["", "Shipped defaults: per constant, the value most folds chose: "
           + ", ".join(f"{k}={v}" for k, v in lo["majority"].items()) + f" (the code's defaults: anchor="
           f"{result['defaults']['anchor']}, name_weight={result['defaults']['name_weight']}, temperature="
           f"{result['defaults']['temperature']:g}).",
           f"In-sample best over all three sets (not a held-out number): `{lo['in_sample']}`.", "",
           "Per-K choice (constants chosen for that K alone on the other two sets):", "",
           "| held out | " + " | ".join(f"{k}-shot" for k in SHOTS) + " |", "|---|" + "---|" * len(SHOTS)]
    for n in names:
        cells = [next(f"`{r['chosen']}` → {r['held_out_accuracy']:.2f}" for r in lo["per_shot"]
                      if r["held_out"] == n and r["shot"] == k) for k in SHOTS]
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    md += ["", "## Imbalanced pools (accuracy on the pool itself; 1-shot: mean of 5 draws)", "",
           "`fallback`: the pool holds fewer than 5 inputs per class, so `anchored-kmeans` leaves the support "
           "unadapted (`min_per_class`).", "",
           "| data set | pool | size / classes present | K | " + " | ".join(
               ["no adaptation", "linear", "recenter+soft-kmeans", "anchored-kmeans", "anchored-kmeans balanced"])
           + " |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    imb = result["imbalance"]
    for (n, p, k) in dict.fromkeys((r["dataset"], r["pool"], r["shot"]) for r in imb):
        rs = {r["method"]: r for r in imb if (r["dataset"], r["pool"], r["shot"]) == (n, p, k)}
        base = rs["zero-shot" if k == 0 else "prototype"]

        def cell(m: str) -> str:
            if m not in rs:
                return ""
            return f"{100 * rs[m]['accuracy']:.1f}" + (" (fallback)" if rs[m]["fallback"] else "")
        md.append(f"| {n} | {p} | {base['pool_size']} / {base['classes_present']} | {k} | "
                  f"{100 * base['accuracy']:.1f} | " + " | ".join(cell(m) for m in (
                      "linear", "recenter+soft-kmeans", "anchored-kmeans", "anchored-kmeans balanced")) + " |")
    md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid-only", action="store_true")
    ap.add_argument("--linear-on-top", type=int, nargs="*", default=[10])
    ap.add_argument("--md-only", action="store_true", help="rewrite the .md from the existing .json")
    args = ap.parse_args()
    if args.md_only:
        (RESULTS / "transductive.md").write_text(write_md(json.loads((RESULTS / "transductive.json").read_text())))
        return
    t0 = time.perf_counter()
    grid, rows, imbalance = {}, [], []
    for name, (train, test) in DATASETS.items():
        d = prepare(str(train), str(test), "minilm")
        log(f"[transductive] {name}: {len(d.classes)} classes, {len(d.train_y)} train / {len(d.test_y)} test")
        grid[name] = run_grid(d, name)
        if not args.grid_only:
            rows += main_rows(d, name, args.linear_on_top)
            imbalance += imbalance_rows(d, name)
    choice = lodo(grid)
    if args.grid_only:
        print(json.dumps(choice, indent=1))
        return
    result = {"encoder": "minilm", "shots": list(SHOTS), "draws": DRAWS, "seed": SEED, "datasets": list(DATASETS),
              "defaults": {"anchor": ANCHOR, "name_weight": NAME_WEIGHT, "temperature": ANCHORED_TEMPERATURE},
              "rows": rows, "lodo": choice, "imbalance": imbalance,
              "grid": {n: {c: {str(k): [round(a, 6) for a in v] for k, v in ks.items()} for c, ks in g.items()}
                       for n, g in grid.items()},
              "seconds": round(time.perf_counter() - t0, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transductive.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "transductive.md").write_text(write_md(result))
    log(f"[transductive] wrote {RESULTS / 'transductive.md'} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
