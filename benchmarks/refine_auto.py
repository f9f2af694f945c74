"""``FewShotEngine.refine("auto")`` as a user runs it, beside the plain baselines, on three development sets.

For each data set (Banking77, CLINC150 in-scope, StackOverflow-20), K shots per class and support draw r, the
supports are exactly those of ``benchmarks/carryover.py`` (``sample_shots(train codes, all classes, K, 5,
seed=0)[r]``). An engine is built the way an application would: ``FewShotEngine("minilm")`` (``--encoder``), one
``add_class(name, examples=..., description=<humanised label>)`` per class; then ``refine("auto")`` (timed: the
whole fit, including any encoder fine-tune and re-embedding of the support) and the whole TEST split is classified
through the engine (re-embedded by the engine's possibly tuned encoder). On the same draw and the same frozen
embeddings: scikit-learn ``LogisticRegression(C=10, max_iter=2000)`` (``logreg``) and nearest prototype.

    .venv/bin/python benchmarks/refine_auto.py [--datasets ...] [--shots 1 5 10] [--draws 5] [--method auto]
        [--encoder mpnet] [--option cache_frozen_bottom=true ...]

writes benchmarks/results/refine_auto[_TAG].json and .md. Run with nothing else busy on the machine: the
``seconds`` column is the fit time on its 2 cores.

``--selection N`` is the mode for choosing settings (``--method encoder --option ...``) without looking at TEST: N
rows of every class of TRAIN (``sample_shots(TRAIN, all classes, N, 1, seed=1)``) are held out as the evaluation
set, the supports are drawn from the rest of TRAIN (``sample_shots(rest, all classes, K, 5, seed=0)``, so not the
carryover draws) and TEST is never read. The baselines are measured on the same held-out rows.

``--adapt METHOD`` (e.g. ``anchored-kmeans``) adds the transductive setting: after ``refine`` (and its accuracy),
``adapt(METHOD)`` on the evaluation inputs as the unlabeled pool (TEST's inputs, never its labels; the held-out
TRAIN rows with ``--selection``), scored by the classifier refine left and by each of ``ADAPT_CLASSIFIERS`` on the
adapted support.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fewshot import FewShotEngine
from fewshot.classifiers import ArraySupport, make_classifier
from fewshot.evaluation.bench import prepare
from fewshot.evaluation.episodes import confidence_interval, sample_shots
from fewshot.templates import humanise_label

sys.path.insert(0, str(Path(__file__).resolve().parent))
from carryover import DATASETS  # noqa: E402 - the same data sets and splits

BASELINES = ("logreg", "prototype")
#: with --adapt, the classifiers scored on the adapted support besides the one refine left (which is also scored)
ADAPT_CLASSIFIERS = ("prototype", "linear")
#: how many draws benchmarks/carryover.py makes; a run with --draws R uses the first R of them
CARRYOVER_DRAWS = 5


def selection_split(labels: np.ndarray, per_class: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(M,) TRAIN class codes → (pool rows, held-out rows): ``per_class`` rows of every class held out (one
    ``sample_shots`` draw with ``seed``), the rest left to draw supports from. Raises ``InvalidInputError`` when a
    class has fewer than ``per_class`` rows."""
    held_rows = np.sort(sample_shots(labels, np.unique(labels), per_class, 1, seed)[0].ravel())
    return np.setdiff1d(np.arange(len(labels)), held_rows), held_rows


def run_dataset(name: str, shots: list[int], draws: int, method: str, on_row=lambda rows: None,
                encoder: str = "minilm", options: dict | None = None, selection: int = 0,
                adapt: str | None = None) -> list[dict]:
    train, test = DATASETS[name]
    # --selection: the evaluation rows come out of TRAIN and TEST is never encoded or read
    data = prepare(str(train), str(train) if selection else str(test), encoder)
    assert data.train_inputs is not None and data.test_inputs is not None and data.train_x is not None
    C = len(data.classes)
    pool = np.arange(len(data.train_y))
    eval_x, eval_y, eval_inputs = data.test_x, data.test_y, data.test_inputs
    if selection:
        pool, held = selection_split(data.train_y, selection)
        eval_x, eval_y, eval_inputs = data.train_x[held], data.train_y[held], [data.train_inputs[i] for i in held]
    rows = []
    for k in shots:
        # (R, C, K): the first R of carryover.py's draws (of the pool's draws with --selection). sample_shots draws
        # all repeats in one batch, so asking for fewer than 5 would give other supports; draw 5 and keep the first R
        draw_rows = pool[sample_shots(data.train_y[pool], np.arange(C), k, max(draws, CARRYOVER_DRAWS), 0)[:draws]]
        for r in range(draws):
            idx = draw_rows[r].ravel()
            row: dict = {"dataset": name, "shot": k, "draw": r}
            for b in BASELINES:
                support = ArraySupport(data.train_x[idx], data.train_y[idx], C)
                scores = make_classifier(b).fit(support).scores(eval_x)
                row[b] = float((scores.argmax(1) == eval_y).mean())
            eng = FewShotEngine(encoder=encoder)
            for c, label in enumerate(data.classes):
                rows_c = draw_rows[r, c]
                eng.add_class(label, examples=[data.train_inputs[i] for i in rows_c],
                              description=humanise_label(label))
            t0 = time.perf_counter()
            row["chosen"] = eng.refine(method, **(options or {}))
            row["seconds"] = time.perf_counter() - t0
            assert eng.classes == data.classes
            # the frozen encoder's TEST embeddings are already there; a tuned encoder re-embeds TEST
            queries = eval_x if eng.encoder.name == data.encoder else eng.embed(eval_inputs, show_progress_bar=False)
            row["accuracy"] = float((eng.scores_from_vectors(queries).argmax(1) == eval_y).mean())
            if adapt:   # transductive: the evaluation inputs (never their labels) are the unlabeled pool
                eng.adapt(queries, adapt)
                row["adapted"] = {eng.classifier_name: float((eng.scores_from_vectors(queries).argmax(1)
                                                             == eval_y).mean())}
                for other in ADAPT_CLASSIFIERS:
                    if other not in row["adapted"]:
                        eng.set_classifier(other)   # keeps the (tuned) encoder and the adaptation
                        row["adapted"][other] = float((eng.scores_from_vectors(queries).argmax(1) == eval_y).mean())
            rows.append(row)
            on_row(rows)
            print(f"[refine_auto] {name} K={k} draw {r}: {row['chosen']} {100 * row['accuracy']:.2f} "
                  f"(logreg {100 * row['logreg']:.2f}) in {row['seconds']:.1f} s"
                  + (f"; adapted {row['adapted']}" if adapt else ""), file=sys.stderr, flush=True)
    return rows


def markdown(payload: dict) -> str:
    status = "" if payload.get("complete", True) else " (INTERRUPTED: the cells list how many draws ran)"
    selection = payload.get("selection", 0)
    drawn, evaluated = (f"drawn from TRAIN less {selection} held-out rows per class",
                        "evaluated on those held-out TRAIN rows (selection mode: TEST is not read)") if selection else \
        ("the draws of `benchmarks/carryover.py`", "all of TEST")
    lines = [f"# `refine(\"{payload['method']}\")` through the engine vs the plain baselines{status}", "",
             f"Up to {payload['draws']} support draws per cell ({drawn}), all classes, {evaluated}, "
             f"encoder `{payload.get('encoder', 'minilm')}`"
             + (f", refine options `{payload['options']}`" if payload.get("options") else "")
             + ". Δ = paired difference to scikit-learn `LogisticRegression(C=10, max_iter=2000)` on the frozen "
             "embeddings of the same draw; seconds = mean wall time of `refine` (fit, incl. any encoder fine-tune) "
             "on this 2-core machine. Written by `benchmarks/refine_auto.py`.", "",
             f"Load average at the last write: {payload.get('loadavg')} (the machine was shared: seconds are "
             "upper bounds).", "",
             "| data set | K | draws | chosen | refine | logreg | prototype | Δ vs logreg (± 95% CI) | seconds |"
             + "".join(f" + {payload['adapt']}, {c} |" for c in ADAPT_CLASSIFIERS if payload.get("adapt")),
             "|---|---:|---:|---|---:|---:|---:|---:|---:|" + ("---:|" * len(ADAPT_CLASSIFIERS) if payload.get("adapt")
                                                             else "")]
    rows = payload["rows"]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        for k in dict.fromkeys(r["shot"] for r in rows if r["dataset"] == d):
            cell = [r for r in rows if r["dataset"] == d and r["shot"] == k]
            acc, lr, pr = (np.array([r[key] for r in cell]) for key in ("accuracy", "logreg", "prototype"))
            delta = acc - lr
            chosen = ", ".join(sorted({r["chosen"] for r in cell}))
            lines.append(f"| {d} | {k} | {len(cell)} | {chosen} | {100 * acc.mean():.2f} | {100 * lr.mean():.2f} | "
                         f"{100 * pr.mean():.2f} | {100 * delta.mean():+.2f} ± {100 * confidence_interval(delta):.2f} | "
                         f"{np.mean([r['seconds'] for r in cell]):.1f} |"
                         + "".join(f" {100 * np.mean([r['adapted'][c] for r in cell]):.2f} |" for c in ADAPT_CLASSIFIERS
                                   if payload.get("adapt")))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--encoder", default="minilm", help="registry name (the baselines use its frozen embeddings)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to refine (JSON values: cache_frozen_bottom=true, default_epochs=4)")
    ap.add_argument("--selection", type=int, default=0, metavar="N",
                    help="hold out N TRAIN rows per class as the evaluation set and never read TEST (for choosing)")
    ap.add_argument("--adapt", default=None, metavar="METHOD",
                    help="after refine, adapt(METHOD) on the evaluation inputs (transductive: their labels are never "
                         "read) and score it with the refined classifier and with each of ADAPT_CLASSIFIERS")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars from the fine-tunes in a long log
    t0 = time.perf_counter()
    stem = Path(args.out) / f"refine_{args.method}{'_' + args.tag if args.tag else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    done: list[dict] = []

    def write(rows: list[dict], complete: bool = False) -> dict:
        """The results so far (written after every draw, so an interrupted run keeps what it measured)."""
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = None
        payload = {"method": args.method, "encoder": args.encoder, "options": options, "draws": args.draws,
                   "selection": args.selection, "adapt": args.adapt,
                   "complete": complete,
                   "rows": done + rows, "wall_seconds": round(time.perf_counter() - t0, 1), "loadavg": load}
        stem.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        stem.with_suffix(".md").write_text(markdown(payload), encoding="utf-8")
        return payload

    for d in args.datasets:
        done += run_dataset(d, args.shots, args.draws, args.method, on_row=write, encoder=args.encoder,
                            options=options, selection=args.selection, adapt=args.adapt)
    print(markdown(write([], complete=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
