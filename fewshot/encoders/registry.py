"""Resolve encoder names to backends: a prefix table, not an if-chain.

Names: 'minilm' (default text), 'effnet-lite0' (default image), 'st:<name|path>', 'clip:<arch>/<pretrained>',
'clip:hf-hub:<org>/<repo>', 'timm:<name>[@<checkpoint>]', 'timm-dir:<dir>' (a saved, e.g. source-adapted, timm
encoder with its preprocessing), 'onnx:<dir>'.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

from fewshot.encoders.base import Encoder
from fewshot.errors import EncoderUnavailableError

#: exact names → (module, loader function)
NAMED_ENCODERS: dict[str, tuple[str, str]] = {
    "minilm": ("fewshot.encoders.sentence", "load_minilm"),
    "effnet-lite0": ("fewshot.encoders.timm_image", "load_effnet_lite0"),
    # installed by `fewshot models install NAME` (fewshot.encoders.catalog), checksums verified
    "mpnet": ("fewshot.encoders.sentence", "load_mpnet"),
    "effnet-lite1": ("fewshot.encoders.timm_image", "load_effnet_lite1"),
    "effnet-lite2": ("fewshot.encoders.timm_image", "load_effnet_lite2"),
}
#: 'prefix:' → (module, loader function taking the rest of the name)
PREFIXED_ENCODERS: dict[str, tuple[str, str]] = {
    "st": ("fewshot.encoders.sentence", "load_st"),
    "clip": ("fewshot.encoders.clip", "load_clip"),
    "timm": ("fewshot.encoders.timm_image", "load_timm"),
    "onnx": ("fewshot.encoders.onnx", "load_onnx"),
    "timm-dir": ("fewshot.encoders.timm_image", "load_timm_dir"),
}

#: prefixes whose rest is a local directory (a saved engine stores such encoders inside its snapshot)
LOCAL_DIR_PREFIXES: tuple[str, ...] = ("onnx", "st", "timm-dir")

DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_IMAGE_ENCODER = "effnet-lite0"

_LOADED: dict[tuple[str, str | None], Encoder] = {}


def list_encoders() -> list[str]:
    """Names and name patterns the registry understands."""
    return sorted(NAMED_ENCODERS) + [f"{p}:..." for p in sorted(PREFIXED_ENCODERS)]


def split_name(name: str) -> tuple[str | None, str]:
    """'st:/path' → ('st', '/path'); a plain name → (None, name). The one parser of encoder names."""
    prefix, sep, rest = name.partition(":")
    return (prefix, rest) if sep and prefix in PREFIXED_ENCODERS else (None, name)


def _resolve(name: str) -> tuple[Callable[..., Encoder], tuple]:
    if not isinstance(name, str) or not name.strip():
        raise EncoderUnavailableError(f"encoder name must be a non-empty string, got {name!r}")
    if name in NAMED_ENCODERS:
        module, fn = NAMED_ENCODERS[name]
        return getattr(importlib.import_module(module), fn), ()
    prefix, rest = split_name(name)
    if prefix is not None and rest:
        module, fn = PREFIXED_ENCODERS[prefix]
        return getattr(importlib.import_module(module), fn), (rest,)
    raise EncoderUnavailableError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}")


def load_encoder(name: str = DEFAULT_TEXT_ENCODER, device: str | None = None, cache: bool = True) -> Encoder:
    """Build (or reuse, when ``cache``) the encoder called ``name``. Never downloads unless
    FEWSHOT_ALLOW_DOWNLOAD=1; raises EncoderUnavailableError with the local alternative instead."""
    if isinstance(name, Encoder):
        return name
    key = (name, device)
    if cache and key in _LOADED:
        return _LOADED[key]
    loader, args = _resolve(name)
    encoder = loader(*args, device=device) if device is not None else loader(*args)
    if cache:
        _LOADED[key] = encoder
    return encoder


def load_prebuilt(key: str, build: Callable[[], Encoder], device: str | None = None) -> Encoder:
    """The encoder cached under ``key`` (with ``device``), else ``build()`` — cached under it. For callers that
    build an encoder with options the registry's loaders do not take (a save's ONNX export, whose checksums the
    save already verified); ``key`` should change whenever the weights do (e.g. include a content hash)."""
    cache_key = (key, device)
    if cache_key not in _LOADED:
        _LOADED[cache_key] = build()
    return _LOADED[cache_key]
