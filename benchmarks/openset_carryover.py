"""Open-set rejection that carries over (issue 15): the library's ``OpenSetDetector`` on 15 open-set splits.

Frozen embeddings (fewshot's disk cache, ``--encoder``, default minilm), prototype classifier, ``SHOTS`` support
examples per known class drawn from TRAIN, ``--draws`` support draws per split (the mean is reported). Every score
and threshold below is the shipped code's: ``OpenSetDetector(...).fit(support, "prototype")``, then
``ood_scores(scores, queries)`` and ``accept(scores, queries)`` — as ``FewShotEngine._openset`` uses it. Nothing
is chosen on test queries.

Splits ("groups" = the data sets a split involves, for leave-one-data-set-out):

* clinc-oos (1): CLINC150, all 150 intents known; unknowns = its 1,000 ``oos_test`` queries;
* class-split (9): Banking77 / CLINC150 / StackOverflow, known = a random 2/3 of the classes (partitions p0-p2),
  unknowns = the TEST queries of the other third;
* far-off (5): an engine over all classes of one data set against another data set's queries (2,000 sampled):
  Banking77 vs StackOverflow titles, Banking77 vs CLINC oos, StackOverflow vs Banking77, StackOverflow vs CLINC
  oos, CLINC150 vs StackOverflow.

Sections: AUROC of the default score beside the raw top cosine (``max-score``) and the old default
(``class-relative+mahalanobis``), every library score; rejection at the default threshold (far-off unknowns
rejected, in-scope accuracy drop, requested vs achieved coverage); ``target="drop"`` requested vs achieved (the
conservative rule the library ships, and the plain LOO order statistic it replaced, on the same LOO scores);
leave-one-data-set-out selection of the score; description-only engines (no examples: the zero-shot threshold
from generic text, ``fewshot.openset.background``, with λ chosen leave-one-data-set-out).

    .venv/bin/python benchmarks/openset_carryover.py [--draws 5] [--encoder minilm] [--only NAME] [--zero-shot-only]

writes benchmarks/results/openset_carryover.json and .md.
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
from sklearn.metrics import roc_auc_score  # noqa: E402

from fewshot.classifiers import ArraySupport, make_classifier  # noqa: E402
from fewshot.openset import DEFAULT_KEEP, DEFAULT_OOD_SCORE, OOD_SCORES, OpenSetDetector, generic_sentences  # noqa: E402
from fewshot.openset.background import ZERO_SHOT_LAMBDA, zero_shot_threshold  # noqa: E402

SHOTS = 10
FAR_OFF_SAMPLE = 2000
RAW, OLD = "max-score", "class-relative+mahalanobis"
OLD_KEEP = 0.95
NEVER_WORSE = 0.003               # the tolerance: default AUROC >= raw - 0.003 on every split
LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
OUT = Path(__file__).resolve().parent / "results"


def load(encoder: str) -> dict:
    """Embeddings of the three development sets (+ CLINC150 oos_test, + the generic sentences), via the cache."""
    from fewshot.datasets import load_clinc150
    from fewshot.encoders import load_encoder
    from fewshot.encoders.cache import cached_encode
    from fewshot.evaluation.bench import prepare

    D: dict = {}
    for name, (train, test) in DATASETS.items():
        d = prepare(str(train), str(test), encoder)
        D[name] = {"train_x": d.train_x.astype(np.float32), "train_y": d.train_y, "test_x": d.test_x.astype(np.float32),
                   "test_y": d.test_y, "classes": list(d.classes), "class_vectors": d.class_vectors.astype(np.float32)}
    enc = load_encoder(encoder)

    def unit(x):
        x = np.asarray(x, np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    clinc = Path(str(DATASETS["clinc150"][0]).split("#")[0])
    D["clinc150_oos_test_x"] = unit(cached_encode(enc, load_clinc150(clinc, "oos_test").inputs,
                                                  show_progress_bar=False))
    D["generic_x"] = unit(cached_encode(enc, generic_sentences(), show_progress_bar=False))
    return D


def splits(D: dict) -> list[dict]:
    out = []
    n = {d: len(D[d]["classes"]) for d in DATASETS}
    out.append({"name": "clinc150/oos", "family": "clinc-oos", "known": "clinc150", "groups": ["clinc150"],
                "classes": np.arange(n["clinc150"]), "unknown": D["clinc150_oos_test_x"]})
    for d in DATASETS:
        for p in range(3):
            perm = np.random.default_rng(100 + p).permutation(n[d])
            k = int(round(2 * n[d] / 3))
            known, unknown = np.sort(perm[:k]), perm[k:]
            out.append({"name": f"{d}/classes-p{p}", "family": "class-split", "known": d, "groups": [d],
                        "classes": known, "unknown": D[d]["test_x"][np.isin(D[d]["test_y"], unknown)]})
    far = [("banking77", "stackoverflow", D["stackoverflow"]["test_x"]),
           ("banking77", "clinc-oos", D["clinc150_oos_test_x"]),
           ("stackoverflow", "banking77", D["banking77"]["test_x"]),
           ("stackoverflow", "clinc-oos", D["clinc150_oos_test_x"]),
           ("clinc150", "stackoverflow", D["stackoverflow"]["test_x"])]
    for d, u, x in far:
        if len(x) > FAR_OFF_SAMPLE:
            x = x[np.sort(np.random.default_rng(7).choice(len(x), FAR_OFF_SAMPLE, replace=False))]
        groups = sorted({d, "clinc150" if u == "clinc-oos" else u})
        out.append({"name": f"{d}/vs-{u}", "family": "far-off", "known": d, "groups": groups,
                    "classes": np.arange(n[d]), "unknown": x})
    return out


def _known(D: dict, sp: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = D[sp["known"]]
    remap = -np.ones(len(d["classes"]), np.int64)
    remap[sp["classes"]] = np.arange(len(sp["classes"]))
    keep = np.isin(d["test_y"], sp["classes"])
    return d["test_x"][keep], remap[d["test_y"][keep]], remap


def rule(accepted: np.ndarray, n_known: int, correct: np.ndarray) -> dict:
    known = accepted[:n_known]
    return {"unk_rejected": float((~accepted[n_known:]).mean()), "coverage": float(known.mean()),
            "drop_pts": float(100 * (correct.mean() - (correct & known).mean()))}


def run_one(D: dict, sp: dict, draw: int) -> dict:
    d = D[sp["known"]]
    known_x, known_y, remap = _known(D, sp)
    rng = np.random.default_rng(1000 * draw + 17)
    idx = np.concatenate([rng.choice(np.flatnonzero(d["train_y"] == c), SHOTS, replace=False) for c in sp["classes"]])
    support = ArraySupport(d["train_x"][idx], remap[d["train_y"][idx]], len(sp["classes"]))
    queries = np.concatenate([known_x, sp["unknown"]]).astype(np.float32)
    in_scope = np.r_[np.ones(len(known_x)), np.zeros(len(sp["unknown"]))]
    scores = make_classifier("prototype").fit(support).scores(queries)
    correct = scores[:len(known_x)].argmax(1) == known_y
    res: dict = {"accuracy": float(correct.mean()), "auroc": {}, "rules": {}}
    plan = {s: [("coverage", DEFAULT_KEEP)] for s in OOD_SCORES}   # the first fit of a score gives its AUROC
    plan[DEFAULT_OOD_SCORE] += [("coverage", OLD_KEEP), ("drop", 0.98)]
    plan[RAW] += [("coverage", OLD_KEEP)]
    plan[OLD] = [("coverage", OLD_KEEP)]                             # the old default at its old threshold
    for s, rules in plan.items():
        for target, keep in rules:
            det = OpenSetDetector(score=s, keep=keep, target=target).fit(support, "prototype")
            if s not in res["auroc"]:
                res["auroc"][s] = float(roc_auc_score(in_scope, det.ood_scores(scores, queries)))
            accepted = det.accept(scores, queries)
            res["rules"][f"{s}|{target}@{keep}"] = rule(accepted, len(known_x), correct)
            if target == "drop":   # the rule it replaced, on the same LOO scores: the plain order statistic
                assert det.loo_ood_ is not None and det.loo_correct_ is not None
                pool = np.sort(det.loo_ood_[det.loo_correct_])
                allowed = int(np.floor((1 - keep) * len(det.loo_ood_) + 1e-9))
                old = float(pool[allowed]) if allowed < len(pool) else float(pool.max()) + 1e-6
                res["rules"][f"{s}|drop-loo@{keep}"] = rule(det.ood_scores(scores, queries) >= old, len(known_x),
                                                            correct)
    return res


def zero_shot(D: dict, sp: dict) -> dict:
    """A description-only engine over the split's known classes (prompt vectors of the class names, no examples)."""
    d = D[sp["known"]]
    known_x, known_y, _ = _known(D, sp)
    C = len(sp["classes"])
    support = ArraySupport(np.zeros((0, known_x.shape[1]), np.float32), np.zeros(0, np.int64), C,
                           d["class_vectors"][sp["classes"]], np.ones(C, bool))
    queries = np.concatenate([known_x, sp["unknown"]]).astype(np.float32)
    in_scope = np.r_[np.ones(len(known_x)), np.zeros(len(sp["unknown"]))]
    clf = make_classifier("prototype").fit(support)
    scores = clf.scores(queries)
    correct = scores[:len(known_x)].argmax(1) == known_y
    det = OpenSetDetector().fit(support, "prototype", background=D["generic_x"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accepted = det.accept(scores, queries)
    out = {"accuracy": float(correct.mean()), "auroc": float(roc_auc_score(in_scope, scores.max(1))),
           "threshold_source": det.threshold_source_, "threshold": float(det.threshold_), "warned": len(caught),
           "shipped": rule(accepted, len(known_x), correct), "lambda": {}}
    for lam in LAMBDAS:
        threshold, _ = zero_shot_threshold(clf, support, D["generic_x"], lam)
        assert threshold is not None
        out["lambda"][str(lam)] = rule(scores.max(1) >= threshold, len(known_x), correct)
    # without background: no threshold, and a typed warning (never a silent no-op)
    bare = OpenSetDetector().fit(support, "prototype")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bare_accepted = bare.accept(scores, queries)
    out["no_background"] = {"accepted_all": bool(bare_accepted.all()),
                            "warning": caught[0].category.__name__ if caught else None}
    return out


def lodo(per_split: dict, sps: list[dict], candidates: list[str], raw: str = RAW) -> list[dict]:
    """For each data set: among candidates never worse than raw − NEVER_WORSE on every split that does not involve
    it, the best mean AUROC gain there; reported on the splits that involve it."""
    rows = []
    for held in DATASETS:
        select = [s["name"] for s in sps if held not in s["groups"] and s["name"] in per_split]
        report = [s["name"] for s in sps if held in s["groups"] and s["name"] in per_split]
        gain = {c: [per_split[n]["auroc"][c] - per_split[n]["auroc"][raw] for n in select] for c in candidates}
        ok = [c for c in candidates if select and min(gain[c]) >= -NEVER_WORSE]
        chosen = max(ok, key=lambda c: float(np.mean(gain[c]))) if ok else raw
        rows.append({"held_out": held, "selection_splits": select, "admissible": ok, "chosen": chosen,
                     "gain_on_selection": float(np.mean(gain[chosen])) if select else 0.0,
                     "held_out_delta": {n: per_split[n]["auroc"][chosen] - per_split[n]["auroc"][raw] for n in report},
                     "default_delta": {n: per_split[n]["auroc"][DEFAULT_OOD_SCORE] - per_split[n]["auroc"][raw]
                                       for n in report}})
    return rows


def lodo_lambda(zs: dict, sps: list[dict], costs: tuple[float, ...] = (1.0, 2.0)) -> list[dict]:
    """λ of the zero-shot threshold, leave-one-data-set-out: max mean (unknowns rejected − w · in-scope rejected)
    on the splits not involving the held-out set, for each cost w of an in-scope rejection."""
    rows = []
    for w in costs:
        for held in DATASETS:
            select = [s["name"] for s in sps if held not in s["groups"]]
            report = [s["name"] for s in sps if held in s["groups"]]

            def j(lam, names, w=w):
                return float(np.mean([zs[n]["lambda"][str(lam)]["unk_rejected"]
                                      - w * (1 - zs[n]["lambda"][str(lam)]["coverage"]) for n in names]))
            chosen = max(LAMBDAS, key=lambda lam: j(lam, select))
            rows.append({"cost": w, "held_out": held, "chosen": chosen, "j_selection": j(chosen, select),
                         "j_held_out": j(chosen, report), "j_held_out_shipped": j(ZERO_SHOT_LAMBDA, report)})
    return rows


def mean_rows(rows: list[dict]) -> dict:
    """Mean over draws of the per-draw results; also the max over draws of each drop."""
    out: dict = {"accuracy": float(np.mean([r["accuracy"] for r in rows])), "draws": len(rows)}
    out["auroc"] = {s: float(np.mean([r["auroc"][s] for r in rows])) for s in rows[0]["auroc"]}
    out["rules"] = {}
    for k in rows[0]["rules"]:
        vals = {m: [r["rules"][k][m] for r in rows] for m in rows[0]["rules"][k]}
        out["rules"][k] = {m: float(np.mean(v)) for m, v in vals.items()}
        out["rules"][k]["drop_pts_max"] = float(np.max(vals["drop_pts"]))
    return out


def markdown(res: dict) -> str:
    per, sps = res["per_split"], [s for s in res["splits"] if s["name"] in res["per_split"]]
    dflt = DEFAULT_OOD_SCORE
    lines = [f"# Open-set rejection that carries over — `{dflt}` (library `OpenSetDetector`)", "",
             f"Encoder `{res['encoder']}`, prototype classifier, {SHOTS} examples per known class from TRAIN, "
             f"**{res['draws']} support draws per split (means)**; written by `benchmarks/openset_carryover.py` "
             f"from the code as it is ({res['seconds']:.0f} s). Default: `score=\"{dflt}\"`, "
             f"`target=\"coverage\", keep={DEFAULT_KEEP}`. Old default: `score=\"{OLD}\"`, `keep={OLD_KEEP}`. "
             "Raw = `max-score` (top prototype cosine).", "",
             "## AUROC (in-scope vs unknown) per split", "",
             f"| split | accuracy | default `{dflt}` | raw | Δ vs raw | old default | Δ old vs raw | "
             + " | ".join(s for s in OOD_SCORES if s not in (dflt, RAW, OLD)) + " |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * (len(OOD_SCORES) - 3)]
    for s in sps:
        a = per[s["name"]]["auroc"]
        lines.append(f"| {s['name']} | {100 * per[s['name']]['accuracy']:.1f} | {a[dflt]:.4f} | {a[RAW]:.4f} | "
                     f"{a[dflt] - a[RAW]:+.4f} | {a[OLD]:.4f} | {a[OLD] - a[RAW]:+.4f} | "
                     + " | ".join(f"{a[x]:.4f}" for x in OOD_SCORES if x not in (dflt, RAW, OLD)) + " |")
    deltas = [per[s["name"]]["auroc"][dflt] - per[s["name"]]["auroc"][RAW] for s in sps]
    old_d = [per[s["name"]]["auroc"][OLD] - per[s["name"]]["auroc"][RAW] for s in sps]
    lines += ["", f"Default vs raw: min Δ {min(deltas):+.4f} (target ≥ −{NEVER_WORSE}), "
              f"{sum(d >= 0.01 for d in deltas)}/{len(deltas)} splits ≥ +0.01 (target: at least half), "
              f"{sum(d < -NEVER_WORSE for d in deltas)} below −{NEVER_WORSE}. "
              f"Old default: min Δ {min(old_d):+.4f}, {sum(d >= 0.01 for d in old_d)}/{len(old_d)} ≥ +0.01, "
              f"{sum(d < -NEVER_WORSE for d in old_d)} below −{NEVER_WORSE}.", "",
              "## Rejection at the default threshold", "",
              "unk rej = unknowns rejected; drop = in-scope accuracy lost, points (max over draws); cov = achieved "
              "coverage of in-scope queries (requested in the header).", "",
              f"| split | default @cov {DEFAULT_KEEP}: unk rej / drop (max) / cov | raw @cov {DEFAULT_KEEP} | "
              f"default @cov {OLD_KEEP} | old default @cov {OLD_KEEP} (old defaults) |", "|---|---:|---:|---:|---:|"]

    def cell(r):
        return f"{r['unk_rejected']:.3f} / {r['drop_pts']:.2f} ({r['drop_pts_max']:.1f}) / {r['coverage']:.3f}"
    for s in sps:
        r = per[s["name"]]["rules"]
        lines.append(f"| {s['name']} | {cell(r[f'{dflt}|coverage@{DEFAULT_KEEP}'])} | "
                     f"{cell(r[f'{RAW}|coverage@{DEFAULT_KEEP}'])} | {cell(r[f'{dflt}|coverage@{OLD_KEEP}'])} | "
                     f"{cell(r[f'{OLD}|coverage@{OLD_KEEP}'])} |")
    lines += ["", "## `target=\"drop\", keep=0.98` (requested: at most 2 points of in-scope accuracy)", "",
              "Shipped rule: reject at most k correct LOO examples, k the largest whose one-sided 90% Clopper-Pearson "
              "upper bound on k/n is ≤ 0.02. Replaced rule: k = floor(0.02·n), on the same LOO scores.", "",
              "| split | shipped: achieved drop, mean (max) / unk rej | replaced rule: drop mean (max) / unk rej |",
              "|---|---:|---:|"]
    for s in sps:
        r = per[s["name"]]["rules"]
        a, b = r[f"{dflt}|drop@0.98"], r[f"{dflt}|drop-loo@0.98"]
        lines.append(f"| {s['name']} | {a['drop_pts']:.2f} ({a['drop_pts_max']:.1f}) / {a['unk_rejected']:.3f} | "
                     f"{b['drop_pts']:.2f} ({b['drop_pts_max']:.1f}) / {b['unk_rejected']:.3f} |")
    lines += ["", "## Leave-one-data-set-out selection of the score (library scores)", "",
              f"Selection: splits that do not involve the held-out data set; admissible = AUROC ≥ raw − {NEVER_WORSE} "
              "on each of them; objective = mean AUROC gain over raw. Reported: the splits that involve it.", "",
              "| held out | chosen | admissible | gain on selection | chosen Δ vs raw on held-out splits | "
              "default's Δ |", "|---|---|---|---:|---|---|"]
    for row in res["lodo"]:
        lines.append(f"| {row['held_out']} | `{row['chosen']}` | {', '.join(row['admissible']) or '—'} | "
                     f"{row['gain_on_selection']:+.4f} | "
                     + ", ".join(f"{k} {v:+.4f}" for k, v in row["held_out_delta"].items()) + " | "
                     + ", ".join(f"{v:+.4f}" for v in row["default_delta"].values()) + " |")
    never = [c for c in OOD_SCORES if all(per[s["name"]]["auroc"][c] - per[s["name"]]["auroc"][RAW] >= -NEVER_WORSE
                                          for s in sps)]
    lines += ["", f"Never worse than raw − {NEVER_WORSE} on all {len(sps)} splits: {', '.join(never) or 'none'}."]
    if res.get("zero_shot"):
        zs = res["zero_shot"]
        lines += ["", "## Description-only engines (no examples)", "",
                  "Each known class has only its prompt vector (the class name in fewshot's templates). Shipped: "
                  f"`OpenSetDetector().fit(support, background=generic sentences)` → threshold "
                  f"g + λ·(n − g) on the top cosine, λ = {ZERO_SHOT_LAMBDA}. Cells: unknowns rejected / accuracy "
                  "drop (points) / in-scope rejected.", "",
                  "| split | zero-shot accuracy | AUROC top cosine | threshold | shipped | "
                  + " | ".join(f"λ={lam}" for lam in LAMBDAS) + " |",
                  "|---|---:|---:|---:|---:|" + "---:|" * len(LAMBDAS)]

        def zcell(r):
            return f"{r['unk_rejected']:.2f} / {r['drop_pts']:.1f} / {1 - r['coverage']:.2f}"
        for s in sps:
            z = zs[s["name"]]
            lines.append(f"| {s['name']} | {100 * z['accuracy']:.1f} | {z['auroc']:.4f} | {z['threshold']:.3f} | "
                         f"{zcell(z['shipped'])} | "
                         + " | ".join(zcell(z["lambda"][str(lam)]) for lam in LAMBDAS) + " |")
        lines += ["", "λ leave-one-data-set-out (objective J: mean of unknowns rejected − w · in-scope rejected on "
                  "the splits not involving the held-out set; w = cost of an in-scope rejection):", "",
                  "| w | held out | chosen λ | J selection | J held out (chosen) | J held out (shipped λ) |",
                  "|---:|---|---:|---:|---:|---:|"]
        for row in res["lodo_lambda"]:
            lines.append(f"| {row['cost']:g} | {row['held_out']} | {row['chosen']} | {row['j_selection']:.3f} | "
                         f"{row['j_held_out']:.3f} | {row['j_held_out_shipped']:.3f} |")
        chosen = sorted(row["chosen"] for row in res["lodo_lambda"])
        lines += ["", f"LODO choices {chosen}: median {float(np.median(chosen)):g}; shipped λ = {ZERO_SHOT_LAMBDA}."]
        nb = [zs[s["name"]]["no_background"] for s in sps]
        lines += ["", f"Without background vectors: every split accepts everything and warns "
                  f"`{nb[0]['warning']}` ({sum(x['warning'] is not None for x in nb)}/{len(nb)} splits warned)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--only", default="")
    ap.add_argument("--zero-shot-only", action="store_true")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=str(OUT))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the saved .json")
    args = ap.parse_args()
    name = "openset_carryover" + (f"_{args.tag}" if args.tag else "")
    if args.markdown_only:
        saved = json.loads((Path(args.out_dir) / f"{name}.json").read_text())
        (Path(args.out_dir) / f"{name}.md").write_text(markdown(saved))
        return
    t0 = time.time()
    D = load(args.encoder)
    sps = [s for s in splits(D) if args.only in s["name"]]
    per_split: dict = {}
    zs: dict = {}
    for sp in sps:
        t = time.time()
        zs[sp["name"]] = zero_shot(D, sp)
        if not args.zero_shot_only:
            per_split[sp["name"]] = mean_rows([run_one(D, sp, draw) for draw in range(args.draws)])
            a = per_split[sp["name"]]["auroc"]
            print(f"{sp['name']}: {time.time() - t:.0f}s  default {a[DEFAULT_OOD_SCORE]:.4f}  raw {a[RAW]:.4f}  "
                  f"old {a[OLD]:.4f}", flush=True)
        else:
            print(f"{sp['name']}: zero-shot {zs[sp['name']]['shipped']}", flush=True)
    res = {"encoder": args.encoder, "draws": args.draws, "shots": SHOTS, "default_score": DEFAULT_OOD_SCORE,
           "default_keep": DEFAULT_KEEP, "zero_shot_lambda": ZERO_SHOT_LAMBDA,
           "splits": [{"name": s["name"], "family": s["family"], "groups": s["groups"], "n_unknown": len(s["unknown"])}
                      for s in sps],
           "per_split": per_split, "zero_shot": zs, "lodo_lambda": lodo_lambda(zs, sps) if len(sps) == 15 else [],
           "lodo": lodo(per_split, sps, list(OOD_SCORES)) if per_split else []}
    res["seconds"] = time.time() - t0
    out = Path(args.out_dir)
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1))
    if per_split:
        (out / f"{name}.md").write_text(markdown(res))
    print(f"wrote {out / name}.json ({res['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
