"""``fewshot bench``: episodic, all-classes and zero-shot benchmarks on cached embeddings.

Results JSON (contract): ``{"encoder": NAME, "results": [{"mode", "method", "way", "shot", "episodes",
"accuracy", "ci95", "seconds"}, ...]}``; with ``--json OUT`` a markdown table (OUT.md) and a plot of
accuracy vs shots with 95% CI bars per method (OUT.png) are written beside it.

Per result, ``seconds`` is the wall time of sampling + scoring; encoding is cached on disk
(``fewshot.encoders.cache``) and reported separately on stderr. For ``zero-shot`` mode every test item is one
trial (``episodes`` = number of test items, ``ci95`` = the binomial normal interval).

The command line is ``fewshot.cli.bench``; the reports (markdown, PNG) are ``fewshot.evaluation.reports``.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np

from fewshot._core import plural
from fewshot.datasets import LabelledData, load_dataset, split_spec
from fewshot.errors import InvalidInputError
from fewshot.openset.detector import DEFAULT_KEEP, DEFAULT_OOD_SCORE, OODScore, RejectTarget

if TYPE_CHECKING:
    from fewshot.classifiers.base import Support

BenchMode = Literal["episodic", "all", "zero-shot", "openset"]
MODES: tuple[str, ...] = get_args(BenchMode)
DEFAULT_METHODS = ("prototype", "simpleshot", "knn")
RESULT_KEYS = ("mode", "method", "way", "shot", "episodes", "accuracy", "ci95", "seconds")


#: progress notes (embedding sizes and times, an adapted --query); ``fewshot bench`` shows them on stderr
LOGGER = logging.getLogger("fewshot.bench")
#: queries per class in an episode unless asked otherwise (fewer when the data have fewer, ``episodic_query``)
DEFAULT_QUERY = 15


@dataclass
class BenchData:
    """Embedded TRAIN/TEST in one label-code space.

    Attributes:
        encoder: the encoder's registry name.
        classes: sorted class names; code i ↔ ``classes[i]``.
        train_x: (Mtr, d) float32 or None (zero-shot only); train_y: (Mtr,) int64 codes.
        test_x: (Mte, d) float32; test_y: (Mte,) int64 codes.
        class_vectors: (C, d) float32 L2-normalised prompt vectors, or None for encoders without text.
        same_pool: TRAIN and TEST are the same data (episodes draw support and queries disjointly from it).
        encode_seconds: wall time spent getting embeddings (near zero when cached).
        train_inputs / test_inputs: the raw TRAIN / TEST items (method ``encoder`` re-embeds them).
        descriptions: {label: description} used for the prompt vectors.
    """

    encoder: str
    classes: list[str]
    train_x: np.ndarray | None
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_vectors: np.ndarray | None
    same_pool: bool
    encode_seconds: float
    train_inputs: list | None = None
    test_inputs: list | None = None
    descriptions: dict | None = None


def class_prompt_vectors(encoder: Any, classes: Sequence[str], descriptions: dict[str, str] | None = None,
                         cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> np.ndarray | None:
    """(C, d) float32 L2-normalised mean of the encoder's prompt templates filled with each class's
    description (or its humanised name). None when the encoder does not embed text. ``use_cache=False`` for
    throw-away encoders (a fine-tuned one per repeat)."""
    from fewshot.encoders.cache import cached_encode
    from fewshot.templates import humanise_label, prompt_vectors

    if "text" not in getattr(encoder, "modalities", ()):
        return None
    descriptions = descriptions or {}
    encode = (lambda texts: cached_encode(encoder, texts, cache_dir=cache_dir)) if use_cache else encoder.encode
    return prompt_vectors(encode, encoder.zero_shot_templates,
                          [descriptions.get(c) or humanise_label(c) for c in classes])


def prepare(train: str | LabelledData, test: str | LabelledData, encoder: str | None = None, *,
            need_train: bool = True, descriptions: dict[str, str] | None = None,
            cache_dir: str | os.PathLike | None = None, same_pool: bool | None = None) -> BenchData:
    """Load (when given paths), encode through the cache, and code the labels of TRAIN and TEST."""
    from fewshot.encoders import load_encoder
    from fewshot.encoders.cache import cached_encode
    from fewshot.encoders.registry import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER

    if same_pool is None:
        same_pool = isinstance(train, (str, os.PathLike)) and isinstance(test, (str, os.PathLike)) and \
            _same_spec(train, test)
    train_d = train if isinstance(train, LabelledData) else load_dataset(train)
    test_d = train_d if same_pool and not isinstance(test, LabelledData) else \
        (test if isinstance(test, LabelledData) else load_dataset(test))
    if train_d.kind != test_d.kind:
        raise InvalidInputError(f"TRAIN holds {train_d.kind}s but TEST holds {test_d.kind}s")
    name = encoder or (DEFAULT_IMAGE_ENCODER if test_d.kind == "image" else DEFAULT_TEXT_ENCODER)
    enc = load_encoder(name)
    classes = sorted(set(test_d.labels) | (set(train_d.labels) if need_train else set()))
    unknown = sorted(set(descriptions or {}) - set(classes))
    if unknown:
        LOGGER.warning("%d described labels are not in the data: %s", len(unknown), unknown[:5])
    t0 = time.perf_counter()
    # texts: one cache entry per data set; images (slow to encode): resumable chunks
    encode = (lambda items: encode_cached(enc, items, cache_dir)) if test_d.kind == "image" else \
        (lambda items: cached_encode(enc, items, cache_dir=cache_dir))
    test_x = encode(test_d.inputs)
    train_x = None
    if need_train:
        train_x = test_x if same_pool else encode(train_d.inputs)
    cv = class_prompt_vectors(enc, classes, descriptions, cache_dir)
    seconds = time.perf_counter() - t0
    LOGGER.info("embeddings (%s): train %s, test %s, %.1f s (cached after the first run)", enc.name,
                None if train_x is None else train_x.shape, test_x.shape, seconds)
    return BenchData(enc.name, classes, train_x, train_d.label_codes(classes), test_x,
                     test_d.label_codes(classes), cv, bool(same_pool), seconds,
                     list(train_d.inputs) if need_train else None, list(test_d.inputs), dict(descriptions or {}))


def encode_cached(encoder: Any, inputs: Sequence[Any], cache_dir: str | os.PathLike | None = None,
                  chunk_size: int = 1024, progress: bool = True) -> np.ndarray:
    """(n, d) embeddings through the disk cache. Sets larger than ``chunk_size`` are cached chunk by chunk,
    so a long encoding (e.g. 13k images on a CPU) resumes where it stopped instead of starting over."""
    from fewshot._progress import progress as policy_bar
    from fewshot.encoders.cache import cached_encode

    inputs = list(inputs)
    if len(inputs) <= chunk_size:
        return cached_encode(encoder, inputs, cache_dir=cache_dir)
    starts = range(0, len(inputs), chunk_size)
    return np.concatenate([cached_encode(encoder, inputs[s:s + chunk_size], cache_dir=cache_dir,
                                         show_progress_bar=False)
                           for s in policy_bar(starts, desc=f"embedding {len(inputs)} inputs ({encoder.name}, "
                                               f"chunks of {chunk_size})", show=None if progress else False)])


def _same_spec(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    (pa, sa), (pb, sb) = split_spec(a), split_spec(b)
    try:
        return sa == sb and os.path.samefile(pa, pb)
    except OSError:
        return os.fspath(a) == os.fspath(b)


def _result(mode: str, method: str, way: int, shot: int, res: Any) -> dict[str, Any]:
    return {"mode": mode, "method": method, "way": int(way), "shot": int(shot), "episodes": len(res.accuracies),
            "accuracy": round(res.accuracy, 6), "ci95": round(res.ci95, 6), "seconds": round(res.seconds, 4)}


def run_openset(data: BenchData, *, methods: Sequence[str] = ("prototype",), shots: Sequence[int] = (10,),
                repeats: int = 5, seed: int = 0, oos_label: str = "oos", keep: float = DEFAULT_KEEP,
                score: OODScore = DEFAULT_OOD_SCORE, target: RejectTarget = "coverage",
                transductive: bool = False) -> list[dict[str, Any]]:
    """Open-set evaluation: TEST holds in-scope items and items labelled ``oos_label``. For each shot count and
    method, ``repeats`` support draws from TRAIN; the threshold comes from the support set only
    (``fewshot.openset.detector.OpenSetDetector``). Adds ``auroc`` (in-scope vs out-of-scope), ``oos_recall`` (share of
    out-of-scope items rejected) and ``accuracy_with_rejection`` (in-scope items accepted and right) to the
    contract keys; ``accuracy`` is the closed-set in-scope accuracy."""
    _check_classifier_methods(methods, "--mode openset")
    from sklearn.metrics import roc_auc_score

    from fewshot.openset.detector import OpenSetDetector

    if oos_label not in data.classes:
        raise InvalidInputError(f"open-set mode needs out-of-scope TEST items labelled {oos_label!r} (e.g. "
                                "--test data_full.json#test+oos); none found")
    oos = data.classes.index(oos_label)
    keep_cols = np.array([c for c in range(len(data.classes)) if c != oos])
    remap = np.full(len(data.classes), -1)
    remap[keep_cols] = np.arange(len(keep_cols))
    train_keep = data.train_y != oos
    train_x, train_y = cast(np.ndarray, data.train_x)[train_keep], remap[data.train_y[train_keep]]
    is_in = data.test_y != oos
    test_y = remap[data.test_y]
    cv = data.class_vectors[keep_cols] if data.class_vectors is not None else None
    out = []
    for k in shots:
        draws = _draws(train_y, len(keep_cols), k, repeats, seed)
        for m in methods:
            rows, t0 = [], time.perf_counter()
            for r in range(repeats):
                scores, support, queries = _score_repeat(m, train_x, train_y, data.test_x, len(keep_cols), draws[r],
                                                cv, transductive)
                det = OpenSetDetector(score=score, keep=keep, target=target).fit(support, m)
                accepted = det.accept(scores, queries)
                correct = scores.argmax(1) == test_y
                rows.append((roc_auc_score(is_in, det.ood_scores(scores, queries)), correct[is_in].mean(),
                             (correct & accepted)[is_in].mean(), (~accepted[~is_in]).mean()))
            arr = np.array(rows)
            res = {"mode": "openset", "method": m + ("+transductive" if transductive else ""), "way": len(keep_cols),
                   "shot": int(k), "episodes": repeats, "accuracy": round(float(arr[:, 1].mean()), 6),
                   "ci95": round(float(1.96 * arr[:, 1].std() / np.sqrt(repeats)), 6),
                   "seconds": round(time.perf_counter() - t0, 4), "auroc": round(float(arr[:, 0].mean()), 6),
                   "accuracy_with_rejection": round(float(arr[:, 2].mean()), 6),
                   "oos_recall": round(float(arr[:, 3].mean()), 6),
                   "reject_score": score, "reject_target": target, "keep": keep}
            out.append(res)
    return out


def _classifier_names() -> list[str]:
    from fewshot.classifiers import CLASSIFIERS
    return sorted(CLASSIFIERS)


def _draws(train_y: np.ndarray, n_classes: int, shots: int, repeats: int, seed: int) -> list[np.ndarray]:
    """Per repeat, the (C·K,) TRAIN rows of K shots per class: ``sample_shots`` exactly as mode 'all' draws them
    (same seed → same supports), so open-set and transductive rows see the same draws; [] rows for 0 shots."""
    from fewshot.evaluation.episodes import sample_shots

    if not shots:
        return [np.zeros(0, np.int64)] * repeats
    return list(sample_shots(train_y, np.arange(n_classes), shots, repeats, seed).reshape(repeats, -1))


def _score_repeat(method: str, train_x: np.ndarray | None, train_y: np.ndarray, test_x: np.ndarray, n_classes: int,
                  idx: np.ndarray, class_vectors: np.ndarray | None, transductive: bool):
    """One 'all classes' repeat on the TRAIN rows ``idx`` (none = zero-shot), optionally adapted to the
    unlabeled TEST pool (recenter + soft k-means, temperature from support LOO). Returns ((Mq, C) scores,
    the support view the classifier was fitted on, the (Mq, d) queries as that view sees them)."""
    from fewshot.adapt import Adaptation
    from fewshot.classifiers import ArraySupport, make_classifier
    from fewshot.openset.detector import fit_temperature, loo_scores

    if len(idx):
        support: Support = ArraySupport(cast(np.ndarray, train_x)[idx], train_y[idx], n_classes, class_vectors)
    else:
        if class_vectors is None:
            raise InvalidInputError("0 shots needs class prompt vectors (a text or CLIP encoder)")
        support = ArraySupport(np.zeros((0, test_x.shape[1]), np.float32), np.zeros(0, np.int64), n_classes,
                               class_vectors)
    queries = test_x
    if transductive:
        s, t = loo_scores(support, "prototype")
        adaptation = Adaptation("recenter+soft-kmeans", temperature=fit_temperature(s, t)).fit(support, test_x)
        support, queries = adaptation.wrap(support), adaptation.transform_queries(test_x)
    return make_classifier(method).fit(support).scores(queries), support, queries


def _check_classifier_methods(methods: Sequence[str], where: str) -> None:
    """Open-set and transductive rows run registered classifiers only: anything else is an error, never a
    silent substitution (a row is labelled with the method that produced it)."""
    unknown = [m for m in methods if m not in _classifier_names()]
    if unknown:
        raise InvalidInputError(f"{where} runs registered classifiers only; {unknown} are not (choose from "
                                f"{_classifier_names()})")


def run_transductive(data: BenchData, mode: str, *, methods: Sequence[str], shots: Sequence[int], repeats: int,
                     seed: int = 0) -> list[dict[str, Any]]:
    """'all' / 'zero-shot' modes with the unlabeled TEST pool used for adaptation (labels never used)."""
    _check_classifier_methods(methods, "--transductive")
    shots = [0] if mode == "zero-shot" else list(shots)
    methods = ["zero-shot"] if mode == "zero-shot" else list(methods)
    out = []
    for k in shots:
        draws = _draws(data.train_y, len(data.classes), k, repeats if k else 1, seed)
        for m in methods:
            accs, t0 = [], time.perf_counter()
            for idx in draws:
                scores, _, _ = _score_repeat(m, data.train_x, data.train_y, data.test_x, len(data.classes), idx,
                                             data.class_vectors, True)
                accs.append(float((scores.argmax(1) == data.test_y).mean()))
            out.append(_repeats_row(mode, f"{m}+transductive", len(data.classes), k, accs, time.perf_counter() - t0))
    return out


def _repeats_row(mode: str, method: str, way: int, shot: int, accuracies: Sequence[float],
                 seconds: float) -> dict[str, Any]:
    """Contract dict for per-repeat accuracies: mean and 95% CI (1.96·std/√R) over the R repeats."""
    arr = np.asarray(accuracies, np.float64)
    return {"mode": mode, "method": method, "way": int(way), "shot": int(shot), "episodes": len(arr),
            "accuracy": round(float(arr.mean()), 6), "ci95": round(float(1.96 * arr.std() / np.sqrt(len(arr))), 6),
            "seconds": round(seconds, 4)}


def episodic_query(data: BenchData, way: int, shots: Sequence[int], query: int | None = None) -> int:
    """Queries per class for episodic mode: ``query``, or with None the largest Q <= ``DEFAULT_QUERY`` that leaves
    ``way`` classes with enough items for the largest shot K (>= K in TRAIN and >= Q in TEST; >= K + Q when they
    are one pool). InvalidInputError names the command-line flags (--way, --shot, --query) when none fits."""
    k = max(shots)
    n_classes = len(data.classes)
    test = np.bincount(data.test_y[data.test_y >= 0], minlength=n_classes)
    train = test if data.same_pool else np.bincount(data.train_y[data.train_y >= 0], minlength=n_classes)

    def qualifying(q: int) -> int:
        return int((train >= k + q).sum()) if data.same_pool else int(((train >= k) & (test >= q)).sum())

    if query is None:
        fits = [q for q in range(DEFAULT_QUERY, 0, -1) if qualifying(q) >= way]
        if fits:
            if fits[0] < DEFAULT_QUERY:
                LOGGER.info("episodic: %s per class (--query %d): the data have too few items for %d",
                            plural(fits[0], "query", "queries"), fits[0], DEFAULT_QUERY)
            return fits[0]
        query = 1
    if qualifying(query) >= way:
        return query
    need = f">= {k + query} items (--shot {k} + --query {query}; TRAIN and TEST are one pool)" if data.same_pool \
        else f">= {k} TRAIN items (--shot {k}) and >= {query} TEST items (--query {query})"
    most = qualifying(query)
    verb = "qualifies" if most == 1 else "qualify"
    raise InvalidInputError(f"episodic mode needs --way {way} classes with {need} each, but only "
                            f"{plural(most, 'class', 'classes')} of {n_classes} {verb}; lower --way"
                            + (f" (to {most})" if most >= 2 else "") + ", --shot or --query, or use --mode all")


def _check_all_shots(data: BenchData, shots: Sequence[int]) -> None:
    """Mode 'all' draws K TRAIN items of every TEST class: InvalidInputError naming --shot when some have fewer."""
    if data.same_pool:
        return  # refused with its own message in run_mode
    k = max(shots)
    train = np.bincount(data.train_y[data.train_y >= 0], minlength=len(data.classes))
    short = [data.classes[c] for c in np.unique(data.test_y[data.test_y >= 0]) if train[c] < k]
    if not short:
        return
    fewest = int(min(train[data.classes.index(c)] for c in short))
    what = f"{plural(len(short), 'class', 'classes')} {'has' if len(short) == 1 else 'have'} fewer " \
        f"(e.g. {', '.join(map(repr, short[:3]))})"
    raise InvalidInputError(f"mode 'all' draws --shot {k} TRAIN items of every TEST class, but {what}; "
                            + (f"lower --shot to {fewest} or less" if fewest else
                               "every TEST label needs items in TRAIN"))


def run_mode(data: BenchData, mode: str, *, methods: Sequence[str] = DEFAULT_METHODS, way: int = 5,
             shots: Sequence[int] = (1, 5), query: int | None = None, episodes: int | None = None, seed: int = 0,
             progress: bool = True) -> list[dict[str, Any]]:
    """Results (contract dicts) of one mode for every shot × method. ``episodes`` defaults to 600 episodes
    (episodic) or 5 repeats (all). Every method sees the same episodes / shot draws for a given shot. ``query``
    None: ``DEFAULT_QUERY`` per class, fewer when the data have fewer (``episodic_query``)."""
    from fewshot._progress import progress as policy_bar
    from fewshot.evaluation.episodes import available_methods, run_all_classes, run_episodic, run_zero_shot

    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
    if mode == "zero-shot":
        if data.class_vectors is None:
            raise InvalidInputError(f"encoder {data.encoder!r} does not embed text, so it cannot classify "
                                    "zero-shot; use a text or CLIP encoder")
        res = run_zero_shot(data.test_x, data.test_y, data.class_vectors)
        return [_result(mode, "zero-shot", len(data.classes), 0, res)]
    unknown = [m for m in methods if m not in available_methods() + [ENCODER_METHOD]]
    if unknown:
        raise InvalidInputError(f"unknown method(s) {unknown}; choose from {available_methods()}")
    if "zero-shot" in methods and data.class_vectors is None:
        raise InvalidInputError(f"method 'zero-shot' needs a text encoder; {data.encoder!r} embeds images only")
    if data.train_x is None:
        raise InvalidInputError(f"mode {mode!r} needs TRAIN embeddings")
    n = episodes if episodes is not None else (600 if mode == "episodic" else 5)
    if ENCODER_METHOD in methods and (mode != "all" or data.same_pool):
        raise InvalidInputError(f"method {ENCODER_METHOD!r} (fine-tune the encoder per repeat) runs in "
                                "mode 'all' with separate TRAIN and TEST sets")
    n_query = episodic_query(data, way, shots, query) if mode == "episodic" else 0
    if mode == "all":
        _check_all_shots(data, shots)
    out = []
    jobs = [(k, m) for k in shots for m in methods]
    for k, m in policy_bar(jobs, desc=f"bench {mode}", show=None if progress and len(jobs) > 1 else False):
        if m == ENCODER_METHOD:
            out.append(run_encoder_refine(data, k, n, seed, progress))
            continue
        if mode == "episodic":
            res = run_episodic(m, data.train_x, data.train_y, None if data.same_pool else data.test_x,
                               None if data.same_pool else data.test_y, n_way=way, n_shot=k, n_query=n_query,
                               n_episodes=n, seed=seed, class_vectors=data.class_vectors)
            out.append(_result(mode, m, way, k, res))
        else:
            if data.same_pool:
                raise InvalidInputError("mode 'all' needs separate TRAIN and TEST sets; use 'episodic' for "
                                        "a data set without a split")
            res = run_all_classes(m, data.train_x, data.train_y, data.test_x, data.test_y, n_shot=k,
                                  n_repeats=n, seed=seed, class_vectors=data.class_vectors)
            out.append(_result(mode, m, len(data.classes), k, res))
    return out


ENCODER_METHOD = "encoder"


def run_encoder_refine(data: BenchData, shots: int, repeats: int, seed: int = 0,
                       progress: bool = True) -> dict[str, Any]:
    """Method ``encoder`` in mode 'all': per repeat, K shots per class from TRAIN (the draws every other method gets
    for this seed, ``fewshot.evaluation.episodes.sample_shots``), the text encoder fine-tuned on
    them as ``FewShotEngine.refine("encoder", calibration_fraction=0)`` does
    (``fewshot.training.text_finetune.finetune_encoder``: contrastive, early stopping on a held-out fifth of the
    support, no refit; closed-set, so no part is kept away for open-set calibration), then a linear probe on the
    re-embedded support and prompt vectors, scored on all of TEST. ``seconds`` include the fine-tune and re-embedding
    TEST."""
    from fewshot.classifiers import ArraySupport, make_classifier
    from fewshot.encoders import load_encoder
    from fewshot.evaluation.episodes import sample_shots
    from fewshot.templates import humanise_label
    from fewshot.training.text_finetune import finetune_encoder

    if data.train_inputs is None or data.test_inputs is None or shots < 1:
        raise InvalidInputError(f"method {ENCODER_METHOD!r} needs TRAIN texts and at least 1 shot")
    if not all(isinstance(x, str) for x in data.train_inputs[:100]):
        raise InvalidInputError(f"method {ENCODER_METHOD!r} fine-tunes a text encoder: the data are not texts")
    base = load_encoder(data.encoder)
    names = [(data.descriptions or {}).get(c) or humanise_label(c) for c in data.classes]
    accs, t0 = [], time.perf_counter()
    draws = sample_shots(data.train_y, np.arange(len(data.classes)), shots, repeats, seed)  # as the other methods
    for r in range(repeats):
        idx = draws[r].ravel()
        texts = [data.train_inputs[i] for i in idx]
        tuned = finetune_encoder(texts, data.train_y[idx], class_names=names, base=base, refit=False,
                                 seed=seed + r, show_progress_bar=progress).encoder
        prompts = class_prompt_vectors(tuned, data.classes, data.descriptions, use_cache=False) \
            if data.class_vectors is not None else None
        support = ArraySupport(tuned.encode_text(texts), data.train_y[idx], len(data.classes), prompts)
        scores = make_classifier("linear").fit(support).scores(tuned.encode_text(data.test_inputs))
        accs.append(float((scores.argmax(1) == data.test_y).mean()))
    return _repeats_row("all", ENCODER_METHOD, len(data.classes), shots, accs, time.perf_counter() - t0)
