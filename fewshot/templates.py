"""Prompt templates for zero-shot class vectors, kept as data apart from the classifier code.

'{}' is replaced by a class name (underscores → spaces) or a description.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fewshot._core import l2_normalise
from fewshot.errors import InvalidInputError

#: A small ensemble for sentence encoders (intent / topic style classes).
TEXT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "This is about {}.",
    "A request about {}.",
    "A question regarding {}.",
)


def clip_templates(kind: str = "openai") -> list[str]:
    """CLIP image-classification templates from open_clip: 'openai' (80 ImageNet) or 'simple' (7)."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    table = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}
    if kind not in table:
        raise InvalidInputError(f"unknown CLIP template set {kind!r}; choose 'openai' or 'simple'")
    return [t("{}") for t in table[kind]]


def humanise_label(label: str) -> str:
    """'card_arrival' → 'card arrival'."""
    return " ".join(label.replace("_", " ").replace("-", " ").split())


def expand(templates: list[str] | tuple[str, ...], phrase: str) -> list[str]:
    """Fill each template with ``phrase``."""
    return [t.replace("{}", phrase) for t in templates]


def prompt_vectors(encode: Callable[[list[str]], np.ndarray], templates: Sequence[str],
                   phrases: Sequence[str]) -> np.ndarray:
    """(C, d) float32: for each of the C phrases (class names or descriptions), the L2-normalised mean of the
    embedded ``templates`` filled with it. ``encode`` maps a list of texts to their (n, d) embeddings (e.g.
    ``encoder.encode_text``, or a cached version); all C × T prompts go to it in one call."""
    templates = list(templates)
    vectors = encode([p for phrase in phrases for p in expand(templates, phrase)])
    return l2_normalise(np.asarray(vectors).reshape(len(phrases), len(templates), -1).mean(1))
