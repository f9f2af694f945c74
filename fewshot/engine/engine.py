"""FewShotEngine: the facade an application embeds. Encoder → SupportIndex → Classifier → Predictions.

    eng = FewShotEngine(encoder="minilm")
    eng.add_class("card_lost", examples=["I lost my card"], description="the customer lost a card")
    eng.predict(["where is my card?"], top_k=3)

Thread-safe: predictions share a readers-writer lock (``engine.locks``) and run in parallel; a change holds it
alone (waiting changes go first); encoding runs outside it, and so does an encoder refine's training (the engine
serves its old state until the new one is swapped in).
The save format is ``persistence``; refine / calibration policies are ``lifecycle``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fewshot._core import as_float_vectors, check_vectors, construct, softmax
from fewshot.adapt import Adaptation, AdaptMethod
from fewshot.classifiers import CLASSIFIERS, Classifier, make_classifier
from fewshot.encoders.base import Encoder, check_input_list
from fewshot.encoders.registry import load_encoder
from fewshot.engine import lifecycle, persistence
from fewshot.engine.locks import ReadWriteLock
from fewshot.engine.predictions import BatchPrediction, Prediction, check_top_k, storable
from fewshot.errors import EmptyClassError, InvalidInputError, NotFittedError
from fewshot.index import IndexType, SupportIndex, storage
from fewshot.openset import OpenSetDetector
from fewshot.openset.confidence import ScoreCalibration
from fewshot.templates import prompt_vectors

if TYPE_CHECKING:
    from fewshot.export import Quantize

__all__ = ["BatchPrediction", "FewShotEngine", "Prediction"]


class FewShotEngine(lifecycle.EngineRepr):
    """Register classes from examples and/or descriptions at runtime, classify, save, reload."""

    def __init__(self, encoder: str | Encoder = "minilm", classifier: str = "prototype",
                 classifier_config: dict | None = None, index_type: IndexType = "flat", device: str | None = None,
                 templates: Sequence[str] | None = None, keep_examples: bool = True, calibrate: bool = True,
                 openset: dict | None = None):
        construct(OpenSetDetector, "openset", **dict(openset or {}))  # checked before any loading; fitted lazily
        self.encoder: Encoder = load_encoder(encoder, device=device) if isinstance(encoder, str) else encoder
        self.index = SupportIndex(self.encoder.dim, index_type=index_type)
        self.classifier: Classifier = make_classifier(classifier, **dict(classifier_config or {}))
        self.templates = list(templates) if templates is not None else list(self.encoder.zero_shot_templates)
        self.raw_examples: dict[str, list[Any]] = {}     # class → raw inputs (texts / image paths), for refine
        self.metadata: dict = {}  # the application's own JSON-serialisable data, saved and loaded with the engine
        self.keep_examples, self.calibrate = keep_examples, bool(calibrate)  # calibrate: LOO temperature, openset
        self.openset_config: dict = dict(openset or {})   # OpenSetDetector arguments (score, keep, per_class...)
        self.openset: OpenSetDetector | None = None       # fitted lazily, when reject=True asks for it
        self.calibration: ScoreCalibration | None = None  # LOO confidences and temperature, fitted lazily
        self.adaptation: Adaptation | None = None         # fitted lazily from adapt_spec
        self.adapt_spec: tuple[np.ndarray, AdaptMethod, dict] | None = None   # (unlabeled (u, dim), method, options)
        #: texts a refine trained on or picked its epoch count with: open-set calibration skips them (optimistic)
        self.encoder_seen_texts: frozenset[str] = frozenset()
        self._lock = ReadWriteLock()  # predictions share it (lifecycle.serving); changes hold it alone
        # _version counts changes to the support: a refine that trained outside the lock checks it
        self._dirty, self._version = True, 0

    classifier_name = property(lambda self: self.classifier.name, doc="The classifier's registered name.")
    classifier_config = property(lambda self: self.classifier.get_config_dict(), doc="The classifier's arguments.")

    # ------------------------------------------------------------------ embedding and classes
    def embed(self, inputs: Sequence[Any], **kwargs: Any) -> np.ndarray:
        """Encode inputs (texts, image paths or PIL images) → (n, dim) float32, L2-normalised."""
        return self.encoder.encode(check_input_list(inputs), **kwargs)

    def describe_vector(self, description: str, encoder: Encoder | None = None) -> np.ndarray:
        """A description → (dim,) prompt vector: normalised mean of the templates filled with it, embedded by
        ``encoder`` (default: the engine's)."""
        if not isinstance(description, str) or not description.strip():
            raise InvalidInputError(f"description must be a non-empty string, got {description!r}")
        return prompt_vectors((encoder or self.encoder).encode_text, self.templates, [description.strip()])[0]

    @property
    def classes(self) -> list[str]:
        """Class names, in the column order of ``predict_proba``."""
        return self.index.classes

    def add_class(self, name: str, examples: Sequence[Any] | None = None, description: str | None = None,
                  vectors: np.ndarray | None = None) -> None:
        """Register a class from examples (texts / images), a description, precomputed (n, dim) vectors, or a
        mix. Everything is encoded and checked before the engine changes, so a bad input changes nothing."""
        if name in self.index:
            self.index.add_class(name)  # raises DuplicateClassError
        has_examples = examples is not None and (not hasattr(examples, "__len__") or len(examples) > 0)
        if not has_examples and description is None and vectors is None:
            raise EmptyClassError(f"class {name!r} needs examples, a description or vectors; got none")

        def embedded(encoder: Encoder) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
            return (encoder.encode(check_input_list(cast("Sequence[Any]", examples))) if has_examples else None,
                    check_vectors(as_float_vectors(vectors, "vectors"), encoder.dim, "vectors")
                    if vectors is not None else None,
                    self.describe_vector(description, encoder) if description is not None else None)

        with lifecycle.embedded_by_current_encoder(self, embedded) as (example_vectors, extra, prompt):
            self.index.add_class(name, description=description, prompt_vector=prompt)
            for block in (example_vectors, extra):
                if block is not None:
                    self.index.add_vectors(name, block)
            if has_examples and self.keep_examples:
                self.raw_examples[name] = [storable(x) for x in cast("Sequence[Any]", examples)]
            self._changed()

    def add_examples(self, name: str, examples: Sequence[Any]) -> None:
        """Add examples to an existing class."""
        self.index.entry(name)  # UnknownClassError before any encoding
        with lifecycle.embedded_by_current_encoder(
                self, lambda encoder: encoder.encode(check_input_list(examples))) as example_vectors:
            self.index.add_vectors(name, example_vectors)
            if self.keep_examples:
                self.raw_examples.setdefault(name, []).extend(storable(x) for x in examples)
            self._changed()

    def add_vectors(self, name: str, vectors: np.ndarray) -> None:
        """Add precomputed (n, dim) example vectors to an existing class."""
        with self._lock:
            self.index.add_vectors(name, vectors)
            self._changed()

    def set_description(self, name: str, description: str | None) -> None:
        """Replace (or with None remove) a class's description and prompt vector."""
        def embedded(encoder: Encoder) -> np.ndarray | None:
            return self.describe_vector(description, encoder) if description is not None else None

        with lifecycle.embedded_by_current_encoder(self, embedded) as prompt:
            entry = self.index.entry(name)
            if prompt is None and not entry.ids:
                raise EmptyClassError(f"class {name!r} has no examples; it cannot lose its description")
            entry.description = description
            self.index.set_prompt_vector(name, prompt)
            self._changed()

    def remove_class(self, name: str) -> None:
        """Remove a class with all its examples."""
        with self._lock:
            self.index.remove_class(name)
            self.raw_examples.pop(name, None)
            self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._dirty = True
        self.openset = self.calibration = None
        self.adaptation = None  # refitted lazily from adapt_spec on the changed support

    # ------------------------------------------------------------------ classifier, refinement, adaptation
    def set_classifier(self, classifier: str | Classifier, **config: Any) -> None:
        """Switch the classification method (a registered name with its config, or a Classifier instance)."""
        new = make_classifier(classifier, **config) if isinstance(classifier, str) else classifier
        with self._lock:
            self.classifier = new
            self._dirty = True  # refit on the current (possibly adapted) support, whatever it saw before
            self.openset = self.calibration = None

    def refine(self, method: str = "auto", **options: Any) -> str:
        """Refine as labels arrive; returns the method used.

        ``"auto"`` picks by the labels per class (``fewshot.engine.lifecycle.choose_method``). A registered
        classifier name (``"fusion"``, ``"linear"``, ``"tip-adapter"`` …) switches to it, learned ones training on
        the support now (hyperparameters chosen by cross-validation on it). ``"encoder"`` fine-tunes the text
        encoder on the kept examples outside the lock (predictions go on meanwhile), then swaps in the re-embedded
        support with a linear probe on top (``lifecycle.refine_and_swap``); the tuned encoder is saved with it."""
        with self._lock:
            if not self.index.n_classes:
                raise NotFittedError("add classes before refining")
            snapshot = lifecycle.take_snapshot(self)
            chosen = lifecycle.choose_method(snapshot.counts, lifecycle.refiner_applies("encoder", snapshot)) \
                if method == "auto" else method
            if chosen not in lifecycle.REFINERS:
                if chosen not in CLASSIFIERS:
                    raise InvalidInputError(f"unknown refinement method {method!r}; choose 'auto', one of "
                                            f"{sorted(lifecycle.REFINERS)} or a classifier: {sorted(CLASSIFIERS)}")
                (new := make_classifier(chosen, **options)).fit(self._support_view())  # may fail: nothing changed
                self.classifier, self._dirty, self.openset, self.calibration = new, False, None, None
                return chosen
        lifecycle.refine_and_swap(self, lifecycle.REFINERS[chosen](snapshot, **options), snapshot)
        return chosen

    def adapt(self, unlabeled: Sequence[Any] | np.ndarray, method: AdaptMethod = "recenter",
              **options: Any) -> None:
        """Adapt to the target distribution from unlabeled inputs (texts / images, or (u, dim) vectors).
        Methods and trade-offs: ``fewshot.adapt``. The index is untouched; ``undo_adapt()`` restores the
        predictions exactly. Adding or removing classes afterwards keeps the adaptation (refitted lazily)."""
        construct(Adaptation, "adapt", method, **options)  # check the arguments before any work
        vectors = check_vectors(as_float_vectors(unlabeled, "unlabeled"), self.encoder.dim, "unlabeled vectors") \
            if isinstance(unlabeled, np.ndarray) else self.embed(unlabeled)
        with self._lock:
            if self.index.n_classes == 0:
                raise NotFittedError("add classes before adapting")
            self._fit_adaptation(vectors, method, options)  # fails here, before the engine changes
            self.adapt_spec = (vectors, method, dict(options))
            self._changed()

    def undo_adapt(self) -> None:
        """Drop the adaptation: predictions return exactly to the unadapted ones."""
        with self._lock:
            if self.adapt_spec is not None:
                self.adapt_spec = None
                self._changed()

    def _support_view(self):
        """What the classifier sees: the index, or its adapted view. Call with the lock held."""
        if self.adapt_spec is None:
            return self.index
        if self.adaptation is None:
            self.adaptation = lifecycle.refit_adaptation(self)
        return self.adaptation.wrap(self.index)

    def _fit_adaptation(self, vectors: np.ndarray, method: AdaptMethod, options: dict) -> Adaptation:
        # soft k-means alone reads the calibration (and a learned classifier being restored has no state yet)
        calibrated = method.endswith("soft-kmeans") and self._uses_calibration()
        return lifecycle.fit_adaptation(self.index, self.classifier, vectors, method, options, calibrated)

    def _adapt_queries(self, queries: np.ndarray) -> np.ndarray:
        if self.adapt_spec is None:
            return queries
        self._support_view()  # fits the adaptation
        return cast(Adaptation, self.adaptation).transform_queries(check_vectors(as_float_vectors(queries, "queries"),
                                                                                 self.encoder.dim, "queries"))

    def configure_openset(self, **config: Any) -> None:
        """Set how ``predict(..., reject=True)`` decides (``fewshot.openset.OpenSetDetector`` arguments: score,
        keep, target, per_class, shrinkage). Checked at once; fitted lazily on the support set."""
        construct(OpenSetDetector, "configure_openset", **config)
        with self._lock:
            self.openset_config = dict(config)
            self.openset = self.calibration = None   # its max_loo_examples / seed choose the LOO folds

    def _fitted(self) -> Classifier:
        """The classifier, refitted to the index if anything changed. Call with the lock held."""
        if self.index.n_classes == 0:
            raise NotFittedError("the engine has no classes yet; call add_class first")
        if self._dirty:
            self.classifier.fit(self._support_view())
            self._dirty = False
        return self.classifier

    # ------------------------------------------------------------------ prediction
    def scores_from_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) embedded queries → (n, C) classifier scores."""
        vectors = as_float_vectors(vectors, "vectors")
        with lifecycle.serving(self, openset=False):
            return self._fitted().scores(self._adapt_queries(vectors))

    def predict_proba(self, inputs: Sequence[Any]) -> np.ndarray:
        """(n, C) probabilities; columns follow ``self.classes``."""
        queries = self.embed(inputs)
        with lifecycle.serving(self, openset=None):
            return self._probabilities(self._fitted().scores(self._adapt_queries(queries)))

    def _uses_calibration(self) -> bool:
        """Calibrate on support for training-free methods on support sets small enough to re-score cheaply."""
        return self.calibrate and not self.classifier.state() and \
            len(self.index) <= lifecycle.MAX_CALIBRATED_EXAMPLES

    def predict(self, inputs: Sequence[Any], top_k: int = 1, reject: bool = False) -> list[Prediction]:
        """Classify inputs. ``reject=True`` returns label None for inputs that fit no class (open set)."""
        check_top_k(top_k)
        return self.predict_vectors(self.embed(inputs), top_k=top_k, reject=reject)

    def predict_vectors(self, queries: np.ndarray, top_k: int = 1, reject: bool = False) -> list[Prediction]:
        """Like ``predict`` for already-embedded (n, dim) queries."""
        return self.predict_arrays(queries, top_k=top_k, reject=reject).predictions()

    def predict_arrays(self, queries: np.ndarray, top_k: int = 1, reject: bool = False) -> BatchPrediction:
        """``predict_vectors`` as arrays (``BatchPrediction``): no object per input, so big batches run in parallel."""
        check_top_k(top_k)
        queries = as_float_vectors(queries, "queries")
        with lifecycle.serving(self, openset=True if reject else None):
            classes, queries = self.index.classes, self._adapt_queries(queries)   # fitted by ``serving``
            scores = self._fitted().scores(queries)
            values, accepted = lifecycle.shown_scores(self, scores, queries, reject)
        return BatchPrediction.from_scores(classes, scores, values, accepted, top_k)

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        """(n, C) scores → probabilities: calibrated temperature when available. Call with the lock held."""
        if self._uses_calibration():
            return self._calibration().probabilities(scores)
        return softmax(scores * self.classifier.logit_scale)

    def _calibration(self) -> ScoreCalibration:
        """The fitted ScoreCalibration (``lifecycle.fit_calibration``). Call with the lock held."""
        if self.calibration is None:
            self.calibration = lifecycle.fit_calibration(self)
        return self.calibration

    def _openset(self) -> OpenSetDetector:
        """The fitted OpenSetDetector (``lifecycle.fit_openset``). Call with the lock held."""
        if self.openset is None:
            self.openset = lifecycle.fit_openset(self, self._calibration())
        return self.openset

    def _unseen_by_encoder(self) -> np.ndarray | None:
        """(n,) bool mask over ``index.examples()``: examples no encoder refine saw (``lifecycle.unseen_mask``)."""
        return lifecycle.unseen_mask(self.index.classes, self.index.example_counts(), self.raw_examples,
                                     self.encoder_seen_texts)

    # ------------------------------------------------------------------ persistence (fewshot.engine.persistence)
    def save(self, directory: str | os.PathLike, portable: bool = False, quantize: Quantize | None = None) -> Path:
        """Save atomically (a crash keeps the previous save). ``portable=True`` bundles an ONNX export of the
        encoder so the engine loads and predicts without torch (``quantize='int8'`` for a smaller, faster one)."""
        with self._lock:
            return storage.atomic_save(directory, persistence.SNAPSHOT_KIND,
                                       lambda snapshot: persistence.write_snapshot(self, snapshot, portable, quantize))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | None = None,
             encoder: str | Encoder | None = None) -> FewShotEngine:
        """Load a saved engine (checksums verified, no pickle). ``encoder`` overrides the saved encoder name."""
        return persistence.load_engine(cls, directory, device=device, encoder=encoder)
