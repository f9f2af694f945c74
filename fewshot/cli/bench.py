"""``fewshot bench``: episodic / all-classes / zero-shot / open-set accuracy on cached embeddings (DESIGN.md
contract); the work is ``fewshot.evaluation.bench``, the reports ``fewshot.evaluation.reports``."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from fewshot.errors import InvalidInputError
from fewshot.evaluation.bench import DEFAULT_METHODS, MODES
from fewshot.openset import DEFAULT_KEEP, DEFAULT_OOD_SCORE, OOD_SCORES, TARGETS

NAME = "bench"
HELP = "benchmark episodic / all-classes / zero-shot / open-set accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fewshot.evaluation.episodes import available_methods

    parser.add_argument("--train", required=True, help="TRAIN data: CSV text,label | JSONL | image folder | "
                        "data_full.json#train | Omniglot .npz")
    parser.add_argument("--test", required=True, help="TEST data, same formats; the same path as --train "
                        "draws support and queries disjointly from it")
    parser.add_argument("--encoder", default=None, help="encoder name (default: minilm for text, effnet-lite0 "
                        "for images)")
    parser.add_argument("--mode", choices=MODES, default="episodic")
    parser.add_argument("--way", type=int, default=5, help="classes per episode (episodic)")
    parser.add_argument("--shot", type=int, nargs="+", default=[1, 5], help="shots per class")
    parser.add_argument("--query", type=int, default=None,
                        help="queries per class (episodic; default 15, or fewer when TEST has fewer per class: the "
                             "largest number that leaves --way classes)")
    parser.add_argument("--episodes", type=int, default=None,
                        help="episodes (episodic, default 600) or repeats (all, default 5)")
    parser.add_argument("--method", nargs="+", default=list(DEFAULT_METHODS), metavar="M",
                        help=f"methods: {', '.join(available_methods())}; 'encoder' (mode all, texts): "
                             "fine-tune the text encoder on each repeat's support, then a linear probe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transductive", action="store_true",
                        help="all / zero-shot / openset: adapt to the unlabeled TEST pool (recenter + soft "
                             "k-means prototypes; labels never used)")
    parser.add_argument("--oos-label", default="oos", help="openset: label of out-of-scope TEST items")
    parser.add_argument("--keep", type=float, default=DEFAULT_KEEP,
                        help="openset: share of in-scope inputs to accept (threshold from support only)")
    parser.add_argument("--reject-score", default=DEFAULT_OOD_SCORE, choices=OOD_SCORES,
                        help="openset: the in-scope score thresholded (see fewshot/openset/detector.py)")
    parser.add_argument("--reject-target", default="coverage", choices=TARGETS,
                        help="openset: what --keep keeps: in-scope inputs (coverage), correct answers (accuracy), "
                             "or accuracy itself (drop: lose at most 1 - keep)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write results JSON here (+ .md, .png)")
    parser.add_argument("--descriptions", default=None, metavar="FILE",
                        help="JSON {label: description} for zero-shot prompts")
    parser.add_argument("--cache-dir", default=None, help="embedding cache (default $FEWSHOT_CACHE_DIR or "
                        "~/.cache/fewshot/embeddings)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints the markdown table (and writes --json OUT + .md + .png). Returns 0."""
    for name in ("way", "query"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InvalidInputError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if any(k < 1 for k in args.shot):
        raise InvalidInputError(f"--shot values must be >= 1, got {args.shot}")
    if args.episodes is not None and args.episodes < 1:
        raise InvalidInputError(f"--episodes must be >= 1, got {args.episodes}")
    if args.transductive and args.mode == "episodic":
        raise InvalidInputError("--transductive works with --mode all, zero-shot or openset")
    with _notes_on_stderr():
        return _run(args)


@contextlib.contextmanager
def _notes_on_stderr() -> Iterator[None]:
    """Show the library's progress notes (``fewshot.bench`` log records at INFO) on stderr while a command runs."""
    logger = logging.getLogger("fewshot")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    from fewshot.datasets import load_descriptions, split_spec
    from fewshot.evaluation.bench import prepare, run_mode, run_openset, run_transductive
    from fewshot.evaluation.reports import markdown_table, write_reports

    data = prepare(args.train, args.test, args.encoder, need_train=args.mode != "zero-shot" or args.transductive,
                   descriptions=load_descriptions(args.descriptions), cache_dir=args.cache_dir)
    if args.mode == "openset":
        results = run_openset(data, methods=args.method, shots=args.shot, repeats=args.episodes or 5,
                              seed=args.seed, oos_label=args.oos_label, keep=args.keep, score=args.reject_score,
                              target=args.reject_target, transductive=args.transductive)
    elif args.transductive:
        results = run_transductive(data, args.mode, methods=args.method, shots=args.shot,
                                   repeats=args.episodes or 5, seed=args.seed)
    else:
        results = run_mode(data, args.mode, methods=args.method, way=args.way, shots=args.shot, query=args.query,
                           episodes=args.episodes, seed=args.seed)
    payload = {"encoder": data.encoder, "results": results}
    print(markdown_table(payload), end="")
    if args.json:
        for p in write_reports(payload, args.json, f"{Path(split_spec(args.test)[0]).name} ({data.encoder})"):
            print(f"wrote {p}", file=sys.stderr, flush=True)
    return 0
