"""``FewShotEngine.refine("encoder")``: fine-tune the engine's text encoder on its kept examples, then rebuild the
index in the new space. Registered with the engine on import (``fewshot.engine.lifecycle.REFINERS``), so the
run-time path never imports this training code."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fewshot.engine import lifecycle
from fewshot.errors import InvalidInputError
from fewshot.index import SupportIndex
from fewshot.templates import expand, humanise_label, prompt_vectors
from fewshot.training import text_finetune
from fewshot.training.text_finetune import FinetuneConfig

#: what ``refine("encoder")`` trains by default: cross-entropy through a cosine head initialised from the frozen
#: class prototypes + class-text vectors, the class texts (the engine's templates filled with each description,
#: else the humanised class name) as extra examples, only the top 2 transformer layers trained, 3 epochs, no
#: hold-out. Measured on Banking77, CLINC150 and StackOverflow (benchmarks/carryover.py); see the issue notes.
DEFAULT_CONFIG = FinetuneConfig(loss="cross-entropy", train_layers=2, lr=1e-4, layer_decay=1.0, head_lr_mult=10.0,
                                scale=30.0, default_epochs=3, val_fraction=0.0, refit=False)
#: share of each class kept away from the fine-tune for open-set calibration, unless asked otherwise: none (every
#: label trains; thresholds are then fitted on examples the encoder saw, so they reject less)
DEFAULT_CALIBRATION_FRACTION = 0.0

if TYPE_CHECKING:
    from fewshot.engine import FewShotEngine


def refine_encoder(engine: FewShotEngine, calibration_fraction: float | None = None, **options: Any) -> str:
    """Fine-tune ``engine.encoder`` on the raw text examples (``options`` override fields of ``DEFAULT_CONFIG``,
    see ``fewshot.training.text_finetune.FinetuneConfig``; e.g. ``loss="contrastive", val_fraction=0.2`` for the
    earlier contrastive fine-tune with early stopping), re-embed every example and description with it, and
    return ``"linear"`` (the classifier to put on top). Called with the engine lock held.

    ``calibration_fraction`` (default ``DEFAULT_CALIBRATION_FRACTION`` = 0; ``lifecycle.CALIBRATION_FRACTION`` =
    0.2 when rejecting unknown inputs matters more than the last point of accuracy) of each class with >= 5
    examples (at least one) is kept away from the fine-tune altogether, so that open-set thresholds are calibrated
    on inputs new to the encoder (when that leaves fewer than ``lifecycle.MIN_UNSEEN_FOR_CALIBRATION``, nothing is
    kept away). The kept-away examples still join the index."""
    fraction = DEFAULT_CALIBRATION_FRACTION if calibration_fraction is None else calibration_fraction
    if not 0.0 <= fraction <= 0.4:  # more would leave a 5-example class < 3 to train and stop on
        raise InvalidInputError(f"calibration_fraction must be in [0, 0.4], got {fraction}")
    classes = engine.index.classes
    texts, labels_arr = example_texts(engine)
    total = int(engine.index.example_counts().sum())
    if len(texts) < total:
        raise InvalidInputError("fine-tuning the encoder needs every example's text; this engine holds "
                                f"{len(texts)} of {total} (keep_examples=False, vectors, or images were added)")
    # drawn among texts no earlier refine saw: a second refine keeps the first one's calibration part unseen
    unseen_so_far = np.array([t not in engine.encoder_seen_texts for t in texts], bool)
    kept_away = text_finetune.calibration_holdout(labels_arr, fraction, int(options.get("seed", 0)),
                                                  lifecycle.MIN_UNSEEN_FOR_CALIBRATION, eligible=unseen_so_far)
    class_texts = [expand(engine.templates, engine.index.entry(name).description or humanise_label(name))
                   for name in classes]
    result = text_finetune.finetune_encoder([t for t, k in zip(texts, kept_away) if not k], labels_arr[~kept_away],
                                            class_names=class_texts, base=engine.encoder, config=DEFAULT_CONFIG,
                                            **options)
    encoder = result.encoder
    encoder.bundle_with_engine = True
    index = SupportIndex(encoder.dim, index_type=engine.index.index_type)
    vectors = encoder.encode_text(texts, show_progress_bar=False)
    described = [name for name in classes if engine.index.entry(name).description is not None]
    prompts = dict(zip(described, prompt_vectors(  # every description in one encoding call
        encoder.encode_text, engine.templates, [str(engine.index.entry(n).description).strip() for n in described])
    )) if described else {}
    for c, name in enumerate(classes):
        entry = engine.index.entry(name)
        index.add_class(name, description=entry.description, prompt_vector=prompts.get(name))
        if (labels_arr == c).any():
            index.add_vectors(name, vectors[labels_arr == c])
    engine.encoder, engine.index = encoder, index
    # + earlier runs: a text seen by any refine of this encoder line stays seen
    engine.encoder_seen_texts = engine.encoder_seen_texts | result.trained_texts | result.selection_texts
    engine.undo_adapt()
    engine._changed()
    return "linear"


def example_texts(engine: FewShotEngine) -> tuple[list[str], np.ndarray]:
    """The kept raw examples that are texts, in class order, and their (m,) class indices."""
    texts, labels = [], []
    for c, name in enumerate(engine.index.classes):
        for x in engine.raw_examples.get(name, []):
            if isinstance(x, str):
                texts.append(x)
                labels.append(c)
    return texts, np.asarray(labels, np.int64)


def can_refine_encoder(engine: FewShotEngine) -> bool:
    """A sentence-transformers text encoder, and every example's text kept (what ``refine_encoder`` needs)."""
    from fewshot.encoders.sentence import SentenceTransformerEncoder

    return isinstance(engine.encoder, SentenceTransformerEncoder) and \
        len(example_texts(engine)[0]) >= int(engine.index.example_counts().sum())


lifecycle.register_refiner("encoder", refine_encoder, applies=can_refine_encoder)
