"""Prompt templates for zero-shot class vectors, kept as data apart from the classifier code.

'{}' is replaced by a class name (underscores → spaces) or a description.
"""
from __future__ import annotations

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
