"""Policies of the engine's lifecycle, apart from the facade: which refinement ``refine("auto")`` picks, how
refinements that train weights plug in, when support-set calibration runs, and which examples an encoder
fine-tune never saw (open-set calibration uses only those)."""
from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fewshot._core import construct
from fewshot.adapt import Adaptation, AdaptMethod
from fewshot.classifiers import Classifier, Support, make_classifier
from fewshot.errors import InvalidInputError, NotFittedError
from fewshot.index import IndexType, SupportIndex
from fewshot.openset import fit_temperature, generic_sentences, loo_scores
from fewshot.openset.confidence import ScoreCalibration
from fewshot.openset.detector import ZERO_SHOT_GENERIC_CONFIDENCE, OpenSetDetector
from fewshot.templates import prompt_vectors

if TYPE_CHECKING:
    from fewshot.encoders.base import Encoder

#: open-set calibration after an encoder refine uses only examples the fine-tune never saw (neither trained on
#: nor used for early stopping), if there are this many
MIN_UNSEEN_FOR_CALIBRATION = 10
#: share of each class (with >= 5 examples) that refine("encoder") keeps away from the fine-tune for calibration
CALIBRATION_FRACTION = 0.2
#: support sets up to this many examples are calibrated by leave-one-out (training-free classifiers only)
MAX_CALIBRATED_EXAMPLES = 100_000

#: ``choose_method`` thresholds on the median number of labelled examples per class. Chosen on Banking77, CLINC150
#: and StackOverflow without TEST (``benchmarks/refine_auto.py --selection``: supports drawn from TRAIN, scored on
#: held-out TRAIN rows; results/refine_{linear,encoder}_select_*shot_*.md): the encoder fine-tune (which trains on
#: the class texts as well as the examples) is above the linear probe on all three at 1 and 3 shots (5 draws; 1 shot:
#: Banking77 69.71 vs 68.77, CLINC150 79.99 vs 79.44, StackOverflow 83.37 vs 76.08; 3 shots: 76.84 vs 76.40, 87.94 vs
#: 86.23, 84.26 vs 77.92), as at 5 and 10 (results/refine_auto_*.md). With most classes described only (median 0)
#: the linear probe is kept: not measured.
AUTO_RULE = (
    "0 labels in every class → 'zero-shot'; median labels per class 0 (most classes described only) or a single "
    "class → 'linear' "
    "(logistic regression on frozen embeddings, regularised toward the class-text prior); otherwise → 'encoder' "
    "(fine-tune the text encoder on the examples and class texts, then a linear probe on the new embeddings), or "
    "'linear' where the encoder cannot be tuned"
)


def choose_method(example_counts: Sequence[int] | np.ndarray, can_tune_encoder: bool = True) -> str:
    """The ``refine(method="auto")`` rule, from the (C,) number of labelled examples per class.

    Returns one of ``'zero-shot'``, ``'linear'``, ``'encoder'`` (see ``AUTO_RULE`` for how it was chosen)::

        all counts 0            → 'zero-shot'
        median count 0, or one class → 'linear'   (the regularised probe, toward the class-text prior)
        otherwise               → 'encoder'    (>= 1 shot: fine-tune the text encoder, then 'linear')

    ``can_tune_encoder=False`` (image, CLIP or ONNX encoders, engines without the example texts) replaces
    'encoder' by 'linear'.
    """
    counts = np.asarray(example_counts, dtype=np.int64).ravel()
    if counts.size == 0:
        raise InvalidInputError("example_counts is empty: add at least one class before refining")
    if (counts < 0).any():
        raise InvalidInputError(f"example_counts must be >= 0, got min {counts.min()}")
    if counts.sum() == 0:
        return "zero-shot"
    med = float(np.median(counts))
    if med < 1 or len(counts) < 2 or not can_tune_encoder:  # one class: nothing for a fine-tune to separate
        return "linear"
    return "encoder"


@dataclass(frozen=True)
class SupportSnapshot:
    """The engine's support as a refiner reads it, copied under the engine lock so that the refiner can train
    outside it: the classes in order, their descriptions and kept raw examples, and what they were embedded with.
    ``version`` tells whether the engine changed since (``FewShotEngine`` counts every change)."""

    version: int
    classes: tuple[str, ...]
    descriptions: dict[str, str | None]
    raw_examples: dict[str, tuple[Any, ...]]
    counts: np.ndarray            # (C,) vectors per class in the index (raw examples + precomputed vectors)
    encoder: Encoder
    templates: tuple[str, ...]
    index_type: IndexType
    seen_texts: frozenset[str]    # texts earlier refines of this encoder line trained on or selected with

    def example_texts(self) -> tuple[list[str], np.ndarray]:
        """The kept raw examples that are texts, in class order, and their (m,) class indices."""
        texts, labels = [], []
        for c, name in enumerate(self.classes):
            for x in self.raw_examples.get(name, ()):
                if isinstance(x, str):
                    texts.append(x)
                    labels.append(c)
        return texts, np.asarray(labels, np.int64)

    def has_every_text(self) -> bool:
        """Whether every vector in the index comes from a kept text example (so a new encoder can re-embed all)."""
        return all(len(self.raw_examples.get(name, ())) == int(n) and
                   all(isinstance(x, str) for x in self.raw_examples.get(name, ()))
                   for name, n in zip(self.classes, self.counts))


@dataclass(frozen=True)
class RefinedEncoder:
    """What a weight-training refiner returns: the new encoder, the classifier to fit on top, and the texts the
    new encoder's whole line has seen (open-set calibration skips them)."""

    encoder: Encoder
    classifier: str
    seen_texts: frozenset[str]


#: a refinement that trains weights: ``fn(snapshot, **options) -> RefinedEncoder``, run OUTSIDE the engine lock on
#: a ``SupportSnapshot``; it must not touch the engine. The engine then embeds the support with the new encoder,
#: fits the classifier and swaps both in atomically (``FewShotEngine.refine``).
Refiner = Callable[..., RefinedEncoder]
#: name → refiner. ``fewshot.training.encoder_refine`` registers ``"encoder"`` (``import fewshot`` loads it): the
#: run-time path never imports the training code, the training code plugs itself in.
REFINERS: dict[str, Refiner] = {}
#: name → ``applies(snapshot) -> bool``: whether that refiner can run on the support (``refine("auto")`` asks)
REFINER_APPLIES: dict[str, Callable[[SupportSnapshot], bool]] = {}
#: how often ``refine`` re-embeds outside the lock what arrived while it trained before it finishes under the lock
SWAP_ATTEMPTS = 3


def register_refiner(name: str, refiner: Refiner,
                     applies: Callable[[SupportSnapshot], bool] = lambda snapshot: True) -> None:
    """Make ``engine.refine(name)`` call ``refiner(snapshot, **options)``; ``applies(snapshot)`` tells whether it
    can run."""
    REFINERS[name] = refiner
    REFINER_APPLIES[name] = applies


def refiner_applies(name: str, snapshot: SupportSnapshot) -> bool:
    return name in REFINERS and bool(REFINER_APPLIES[name](snapshot))


def embed_support(encoder: Encoder, snapshot: SupportSnapshot, cache: dict[str, np.ndarray]) -> SupportIndex:
    """A new SupportIndex of ``snapshot``'s classes, every example text and description embedded by ``encoder``.
    ``cache`` maps texts (and ``"\0description\0" + text``) to vectors this encoder already gave; only the rest is
    encoded, and added to it, so re-embedding after a few arrivals costs only those."""
    if not snapshot.has_every_text():
        raise InvalidInputError("re-embedding the support with a new encoder needs every example's text; a class "
                                "holds vectors without their text (add_vectors, keep_examples=False, or images)")
    texts, labels = snapshot.example_texts()
    missing = list(dict.fromkeys(t for t in texts if t not in cache))
    if missing:
        cache.update(zip(missing, encoder.encode_text(missing, show_progress_bar=False)))
    key = "\0description\0"
    described = [str(d).strip() for d in snapshot.descriptions.values() if d is not None]
    new_descriptions = list(dict.fromkeys(d for d in described if key + d not in cache))
    if new_descriptions:  # every description in one encoding call
        vectors = prompt_vectors(encoder.encode_text, snapshot.templates, new_descriptions)
        cache.update(zip((key + d for d in new_descriptions), vectors))
    index = SupportIndex(encoder.dim, index_type=snapshot.index_type)
    for c, name in enumerate(snapshot.classes):
        description = snapshot.descriptions[name]
        index.add_class(name, description=description,
                        prompt_vector=None if description is None else cache[key + description.strip()])
        rows = [cache[t] for t, label in zip(texts, labels) if label == c]
        if rows:
            index.add_vectors(name, np.stack(rows))
    return index


def unseen_mask(classes: Sequence[str], counts: np.ndarray, raw_examples: dict[str, list[Any]],
                seen_texts: frozenset[str]) -> np.ndarray | None:
    """(n,) bool mask over the index's examples (class order): those no encoder refine saw (not trained on, not
    used for early stopping). None — calibrate on every example — when no refine saw any, when fewer than
    ``MIN_UNSEEN_FOR_CALIBRATION`` are unseen (thresholds are then optimistic: fewer rejections), or when the
    raw examples do not line up with the index."""
    if not seen_texts:
        return None
    mask: list[bool] = []
    for name, count in zip(classes, counts):
        raw = raw_examples.get(name, [])
        if len(raw) != count:
            return None
        mask += [not (isinstance(x, str) and x in seen_texts) for x in raw]
    out = np.asarray(mask, bool)
    return out if out.sum() >= MIN_UNSEEN_FOR_CALIBRATION else None


def fit_adaptation(support: Support, classifier: Classifier, vectors: np.ndarray, method: AdaptMethod,
                   options: dict, calibrated: bool) -> Adaptation:
    """Fit an Adaptation of ``support`` to the (u, d) unlabeled ``vectors``. Without a user-given temperature,
    soft k-means uses the temperature calibrated on the support (leave-one-out) when ``calibrated``."""
    options = dict(options)
    if "temperature" not in options and method.endswith("soft-kmeans") and calibrated:
        scores, truth = loo_scores(support, classifier)
        options["temperature"] = fit_temperature(scores, truth, classifier.logit_scale)
    return construct(Adaptation, "adapt", method, **options).fit(support, vectors)


def refit_adaptation(engine: Any) -> Adaptation:
    """The engine's adaptation (``engine.adapt_spec``) refitted to its changed support. A support it cannot fit
    any more (e.g. CORAL left with one vector after removals) is a ``NotFittedError`` naming the way out, not an
    input error: no argument of the call that hit it was wrong."""
    vectors, method, options = engine.adapt_spec
    try:
        return engine._fit_adaptation(vectors, method, options)
    except InvalidInputError as exc:
        raise NotFittedError(f"the {method!r} adaptation cannot be refitted to the classes as they are now ({exc}); "
                             "add examples, or call undo_adapt()") from None


def refine_and_swap(engine: Any, refined: RefinedEncoder, snapshot: SupportSnapshot) -> None:
    """Embed ``snapshot``'s support with the refined encoder, fit its classifier and swap both into ``engine``
    atomically, all outside the engine lock while the engine serves its old state. If the support changed
    meanwhile (``engine._version``), take the new snapshot and embed only what arrived; after
    ``SWAP_ATTEMPTS - 1`` such rounds finish under the lock. A failure leaves the engine unchanged."""
    vectors: dict[str, np.ndarray] = {}
    for attempt in range(SWAP_ATTEMPTS):
        last = attempt == SWAP_ATTEMPTS - 1
        with contextlib.ExitStack() as stack:
            if last:
                stack.enter_context(engine._lock)
                snapshot = take_snapshot(engine)
            index = embed_support(refined.encoder, snapshot, vectors)
            classifier = make_classifier(refined.classifier)
            classifier.fit(index)
            with engine._lock:  # re-entrant on the last attempt
                if last or engine._version == snapshot.version:
                    install(engine, refined, index, classifier)
                    return
                snapshot = take_snapshot(engine)


def take_snapshot(engine: Any) -> SupportSnapshot:
    """``engine``'s support as a refiner reads it. Call with the engine lock held."""
    index = engine.index
    return SupportSnapshot(
        version=engine._version, classes=tuple(index.classes),
        descriptions={name: index.entry(name).description for name in index.classes},
        raw_examples={name: tuple(xs) for name, xs in engine.raw_examples.items()},
        counts=index.example_counts().copy(), encoder=engine.encoder, templates=tuple(engine.templates),
        index_type=index.index_type, seen_texts=engine.encoder_seen_texts)


def install(engine: Any, refined: RefinedEncoder, index: SupportIndex, classifier: Classifier) -> None:
    """Swap a refined encoder with its index and fitted classifier into ``engine``. Call with the engine lock
    held. An adaptation was fitted in the old embedding space: it is dropped."""
    engine.encoder, engine.index, engine.classifier = refined.encoder, index, classifier
    engine.encoder_seen_texts = refined.seen_texts
    engine.adapt_spec = None
    engine._changed()
    engine._dirty = False


#: encoder → (m, d) embeddings of the shipped generic sentences (``background_text``), computed once per encoder
_BACKGROUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def background_text(engine: Any) -> Callable[[], np.ndarray | None] | None:
    """For rejection without leave-one-out data (description-only classes): a callable giving the shipped generic
    sentences (``fewshot.openset.generic_sentences``) embedded by the engine's encoder — (m, d), through the same
    adaptation as queries — computed on first use and kept per encoder. None for encoders that do not embed text
    queries (image encoders; CLIP, whose queries are images), and the callable gives None for an encoder that
    cannot embed text after all (the detector then warns that rejection is not calibrated)."""
    encoder = engine.encoder
    if set(getattr(encoder, "modalities", ())) != {"text"}:
        return None

    def vectors() -> np.ndarray | None:
        if encoder not in _BACKGROUND:
            try:
                _BACKGROUND[encoder] = _generic_vectors(encoder)
            except InvalidInputError:  # declares text but cannot embed it (e.g. precomputed vectors only)
                return None
        out = _BACKGROUND[encoder]
        return engine.adaptation.transform_queries(out) if engine.adaptation is not None else out

    return vectors


def _generic_vectors(encoder: Encoder) -> np.ndarray:
    """(m, d) embeddings of the generic sentences. An encoder whose weights are local files (``source``: the
    embedding cache fingerprints them) goes through the disk cache (``fewshot.encoders.cache``), so a new process,
    e.g. each ``fewshot classify --labels`` call, does not embed them again; others (and an unwritable cache) embed
    them here."""
    from fewshot.encoders.cache import cached_encode

    sentences = generic_sentences()
    source = getattr(encoder, "source", None)
    if isinstance(source, str) and os.path.exists(source):
        try:
            return cached_encode(encoder, sentences, show_progress_bar=False)
        except OSError:
            pass
    return encoder.encode_text(sentences, show_progress_bar=False)


def _calibration_view(engine: Any) -> Support:
    """The support calibration scores: the adapted space, but not soft-k-means prototypes that saw the held-out
    examples. Call with the lock held."""
    engine._support_view()      # fits the adaptation
    return engine.adaptation.calibration_view(engine.index) if engine.adaptation is not None else engine.index


def fit_calibration(engine: Any) -> ScoreCalibration:
    """The engine's LOO confidences (``fewshot.openset.confidence``), on the open-set detector's LOO settings so
    that the detector reuses the scores. Call with the lock held."""
    folds = OpenSetDetector(**engine.openset_config)
    return ScoreCalibration(folds.max_loo_examples, folds.seed).fit(
        _calibration_view(engine), engine.classifier, default_temperature=engine.classifier.logit_scale,
        calibrate_on=engine._unseen_by_encoder())


def fit_openset(engine: Any, calibration: ScoreCalibration) -> OpenSetDetector:
    """The engine's open-set detector, fitted on ``calibration``'s LOO scores. Call with the lock held."""
    return OpenSetDetector(**engine.openset_config).fit(
        _calibration_view(engine), engine.classifier, default_temperature=engine.classifier.logit_scale,
        calibrate_on=engine._unseen_by_encoder(), background=background_text(engine),
        held_out=calibration.held_out_)


def confidence_map(engine: Any) -> ScoreCalibration | OpenSetDetector:
    """What sets ``Prediction.score`` without rejection: the calibration, or on a small support the detector
    (``fewshot.openset.confidence``). Call with the lock held."""
    calibration = engine._calibration()
    return engine._openset() if calibration.small else calibration


def shown_scores(engine: Any, scores: np.ndarray, queries: np.ndarray, reject: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) classifier scores of the (n, d) queries → ((n, C) values the predictions show, (n,) accepted). With
    ``reject`` the detector's confidences (acceptance follows the score shown), else the calibration's; softmax
    probabilities where neither applies. Call with the lock held."""
    confidence, accepted = None, np.ones(len(scores), bool)
    if reject:
        confidence, accepted = engine._openset().assess(scores, queries, reject=True)
    elif engine._uses_calibration():
        confidence = confidence_map(engine).confidences(scores, queries)
    if confidence is not None and engine._uses_calibration():
        return confidence, accepted
    return engine._probabilities(scores), accepted


def _fitted_for(engine: Any, openset: bool | None) -> bool:
    """Call with the classifier fitted: whether what a prediction reads besides it (``serving``'s ``openset``) is
    fitted — the detector for rejection; without it, the calibration when the engine calibrates its scores (and
    on a small support the detector, which sets the confidences there)."""
    if openset:
        return engine.openset is not None
    if openset is None and engine._uses_calibration():
        calibration = engine.calibration
        return calibration is not None and (not calibration.small or engine.openset is not None)
    return True


def ready_to_serve(engine: Any, openset: bool | None) -> bool:
    """Whether predictions can run under the shared (read) lock: classifier, adaptation and, where needed, the
    calibration and the open-set detector are fitted to the current support, so serving changes nothing."""
    return not engine._dirty and (engine.adapt_spec is None or engine.adaptation is not None) and \
        _fitted_for(engine, openset)


@contextlib.contextmanager
def serving(engine: Any, openset: bool | None) -> Iterator[None]:
    """Hold ``engine``'s lock for a prediction: the shared (read) side, with everything it reads fitted first under
    the write side if a change left it stale (once per change, not per prediction). ``openset``: the prediction
    needs the open-set detector (True), only when the engine calibrates its scores (None), or not at all (False).
    After ``SWAP_ATTEMPTS - 1`` rounds in which changes kept coming, it serves under the write side."""
    for attempt in range(SWAP_ATTEMPTS):
        last = attempt == SWAP_ATTEMPTS - 1
        if not last:
            with engine._lock.read():
                if ready_to_serve(engine, openset):
                    yield
                    return
        with engine._lock:
            engine._fitted()  # first: whether the scores are calibrated depends on the fitted classifier
            if openset:
                engine._openset()
            elif openset is None and engine._uses_calibration():
                confidence_map(engine)
            if last:
                yield
                return


@contextlib.contextmanager
def embedded_by_current_encoder(engine: Any, embed: Callable[[Encoder], Any]) -> Iterator[Any]:
    """Run ``embed(encoder)`` outside ``engine``'s lock, then hold the lock for the ``with`` body. If a refine
    swapped the encoder in between, embed again (the last try under the lock), so old-space vectors never reach
    the new index."""
    for attempt in range(SWAP_ATTEMPTS):
        last = attempt == SWAP_ATTEMPTS - 1
        with contextlib.ExitStack() as stack:
            if last:
                stack.enter_context(engine._lock)
            encoder = engine.encoder
            result = embed(encoder)
            with engine._lock:  # re-entrant on the last attempt
                if last or engine.encoder is encoder:
                    yield result
                    return



class EngineRepr:
    """``repr(engine)``: what it classifies with and how much it holds, e.g.
    ``FewShotEngine(encoder='minilm', dim=384, classes=3, examples=12, classifier='prototype')`` (reads counters
    only: no lock, no fitting); and ``engine.score_meaning``. Mixed into the facade."""

    def __repr__(self) -> str:
        engine: Any = self
        parts = [f"encoder={engine.encoder.name!r}", f"dim={int(engine.encoder.dim)}",
                 f"classes={engine.index.n_classes}", f"examples={len(engine.index)}",
                 f"classifier={engine.classifier.name!r}"]
        if engine.adapt_spec is not None:
            parts.append(f"adapted={engine.adapt_spec[1]!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def score_meaning(self) -> str:
        """What ``Prediction.score`` is in the engine's current state: ``'calibrated'`` (P(top label right | score),
        fitted on the support by leave-one-out), ``'zero-shot: ...'`` (fewer than 5 leave-one-out examples, text
        engines: 0.5 at the rejection threshold, so ``reject=True`` keeps exactly the inputs scored >= 0.5) or
        ``'softmax: <why not>'``, for ``predict(reject=False)`` (with ``reject=True`` a calibrated score is conditioned
        on the rejection score instead). Fits what a change left stale, as the next prediction would (the
        calibration, when scores are calibrated)."""
        engine: Any = self
        with serving(engine, openset=None):
            classifier = engine.classifier
            if not engine.calibrate:
                return "softmax: calibrate=False"
            if classifier.state():
                return (f"softmax: the learned classifier {classifier.name!r} is fitted on every support example, "
                        "so there are no held-out scores to calibrate on")
            if len(engine.index) > MAX_CALIBRATED_EXAMPLES:
                return f"softmax: more than {MAX_CALIBRATED_EXAMPLES:,} examples (calibration skipped)"
            calibration = engine.calibration
            confidence = engine.openset if calibration is None or calibration.small else calibration
            if isinstance(confidence, OpenSetDetector) and confidence.platt_ is None and \
                    confidence.zero_shot_scale_ is not None:
                return ("zero-shot: too few leave-one-out scores to calibrate on, so the score is 0.5 at the rejection "
                        f"threshold (from how generic text scores) and {ZERO_SHOT_GENERIC_CONFIDENCE:g} at typical "
                        "generic text; not a probability")
            if confidence is None or confidence.platt_ is None:
                return "softmax: too few leave-one-out scores to calibrate on (classes with 2+ examples needed)"
            return "calibrated"
