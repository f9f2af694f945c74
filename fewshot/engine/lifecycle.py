"""Policies of the engine's lifecycle, apart from the facade: which refinement ``refine("auto")`` picks, how
refinements that train weights plug in, when support-set calibration runs, and which examples an encoder
fine-tune never saw (open-set calibration uses only those)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fewshot.adapt import Adaptation, AdaptMethod
from fewshot.classifiers import Classifier, Support
from fewshot.errors import InvalidInputError
from fewshot.openset import fit_temperature, loo_scores

if TYPE_CHECKING:
    pass

#: open-set calibration after an encoder refine uses only examples the fine-tune never saw (neither trained on
#: nor used for early stopping), if there are this many
MIN_UNSEEN_FOR_CALIBRATION = 10
#: share of each class (with >= 5 examples) that refine("encoder") keeps away from the fine-tune for calibration
CALIBRATION_FRACTION = 0.2
#: support sets up to this many examples are calibrated by leave-one-out (training-free classifiers only)
MAX_CALIBRATED_EXAMPLES = 100_000

#: ``choose_method`` thresholds on the median number of labelled examples per class. Chosen leave-one-data-set-out
#: on Banking77, CLINC150 and StackOverflow (benchmarks/results/carryover.md, refine_auto.md): the linear probe is
#: at or above a plain LogisticRegression at 1, 5 and 10 shots on all three, 'fusion' wins on one set and loses on
#: the other two at 5 shots; the encoder fine-tune was measured at 5 and 10 shots.
AUTO_RULE = (
    "0 labels in every class → 'zero-shot'; median labels per class < 4 → 'linear' (logistic regression on "
    "frozen embeddings, regularised toward the class-text prior); otherwise → 'encoder' (fine-tune the top of the "
    "text encoder, then a linear probe on the new embeddings), or 'linear' where the encoder cannot be tuned"
)


def choose_method(example_counts: Sequence[int] | np.ndarray, can_tune_encoder: bool = True) -> str:
    """The ``refine(method="auto")`` rule, from the (C,) number of labelled examples per class.

    Returns one of ``'zero-shot'``, ``'linear'``, ``'encoder'`` (see ``AUTO_RULE`` for how it was chosen)::

        all counts 0            → 'zero-shot'
        median count < 4        → 'linear'     (the regularised probe: >= the plain regression from 1 shot on)
        otherwise               → 'encoder'    (>= 4 shots: fine-tune the encoder's top layers, then 'linear')

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
    if med < 4 or not can_tune_encoder:
        return "linear"
    return "encoder"


#: a refinement that trains weights: ``fn(engine, **options)`` changes the engine's encoder / index (called with
#: the engine lock held) and returns the classifier name to use on top
Refiner = Callable[..., str]
#: name → refiner. ``fewshot.training.encoder_refine`` registers ``"encoder"`` (``import fewshot`` loads it): the
#: run-time path never imports the training code, the training code plugs itself in.
REFINERS: dict[str, Refiner] = {}
#: name → ``applies(engine) -> bool``: whether that refiner can run on the engine (``refine("auto")`` asks)
REFINER_APPLIES: dict[str, Callable[[Any], bool]] = {}


def register_refiner(name: str, refiner: Refiner, applies: Callable[[Any], bool] = lambda engine: True) -> None:
    """Make ``engine.refine(name)`` call ``refiner(engine, **options)``; ``applies(engine)`` tells whether it can."""
    REFINERS[name] = refiner
    REFINER_APPLIES[name] = applies


def refiner_applies(name: str, engine: Any) -> bool:
    return name in REFINERS and bool(REFINER_APPLIES[name](engine))


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
    return Adaptation(method, **options).fit(support, vectors)
