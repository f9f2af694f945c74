"""open_clip backend: 'clip:<arch>/<pretrained>' — image and text towers in one embedding space.

``<pretrained>`` is an open_clip tag (e.g. 'laion2b_s34b_b79k', needs the hub or its cache), a local checkpoint
file (.pt/.pth/.bin/.safetensors, loaded with weights_only=True), or 'none' for random weights (tests).
'clip:hf-hub:<org>/<repo>' loads a model card from the Hugging Face hub (or its local cache).
Images are preprocessed with the model's own eval transform, never a silent default.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fewshot._core import l2_normalise
from fewshot._progress import progress
from fewshot.encoders.base import (
    Encoder,
    check_input_list,
    check_texts,
    default_device,
    downloads_allowed,
    encode_image_batches,
    hub_offline,
)
from fewshot.errors import EncoderUnavailableError, InvalidInputError


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """'ViT-B-32/openai' → ('ViT-B-32', 'openai'); 'hf-hub:org/repo' → ('hf-hub:org/repo', None)."""
    if spec.startswith("hf-hub:"):
        return spec, None
    arch, sep, pretrained = spec.partition("/")
    if not arch or not sep or not pretrained:
        raise EncoderUnavailableError(f"CLIP encoder {spec!r} must look like 'clip:<arch>/<pretrained>' "
                                      "(pretrained = a tag, a checkpoint path, or 'none'), or "
                                      "'clip:hf-hub:<org>/<repo>'")
    return arch, pretrained


class OpenClipEncoder(Encoder):
    """Text + image encoder over an open_clip model."""

    modalities = frozenset({"text", "image"})

    def __init__(self, spec: str, device: str | None = None, template_set: str = "openai"):
        import open_clip

        self.name = f"clip:{spec}"
        self.device = device or default_device()
        self.template_set = template_set
        arch, pretrained = parse_clip_spec(spec)
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            raise EncoderUnavailableError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
        is_file = pretrained is not None and os.path.isfile(pretrained)
        needs_hub = arch.startswith("hf-hub:") or (pretrained not in (None, "none") and not is_file)
        if pretrained not in (None, "none") and not is_file and ("/" in pretrained or os.sep in pretrained):
            raise EncoderUnavailableError(f"CLIP checkpoint file not found: {pretrained}")
        try:
            with hub_offline():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=None if pretrained == "none" else pretrained, device=self.device,
                    weights_only=True)
        except Exception as exc:  # noqa: BLE001 - open_clip/hub raise many types
            hint = ""
            if needs_hub:
                why = "downloading from the model hub failed" if downloads_allowed() else \
                    "it is not in the local hub cache and fewshot downloads only with FEWSHOT_ALLOW_DOWNLOAD=1"
                hint = (f" {why[0].upper()}{why[1:]}: pass a local checkpoint file "
                        f"('clip:{arch}/path/to/open_clip_model.safetensors'), pre-populate the hub cache, or set "
                        "FEWSHOT_ALLOW_DOWNLOAD=1.")
            raise EncoderUnavailableError(f"cannot load CLIP model {spec!r}: {exc}.{hint}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(arch)
        import torch
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])

    @property
    def zero_shot_templates(self) -> list[str]:
        from fewshot.templates import clip_templates
        return clip_templates(self.template_set)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256,
                    show_progress_bar: bool | None = None) -> np.ndarray:
        import torch

        texts = check_texts(texts)
        out = []
        for start in progress(range(0, len(texts), batch_size), show=show_progress_bar,
                              desc="encoding texts (CLIP)"):
            tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
            with torch.inference_mode():
                out.append(self.model.encode_text(tokens).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def encode_images(self, images: Sequence[Any], batch_size: int = 32,
                      show_progress_bar: bool | None = None) -> np.ndarray:
        return encode_image_batches(images, self.preprocess, self.model.encode_image, name="CLIP",
                                    device=self.device, batch_size=batch_size, show_progress_bar=show_progress_bar)

    def encode(self, inputs: Sequence[Any], **kwargs: Any) -> np.ndarray:
        inputs = check_input_list(inputs)
        kinds = {isinstance(x, str) and not os.path.isfile(x) for x in inputs}
        if len(kinds) > 1:
            raise InvalidInputError("mixed texts and images in one call; encode them separately")
        return self.encode_text(inputs, **kwargs) if kinds == {True} else self.encode_images(inputs, **kwargs)


def load_clip(spec: str, device: str | None = None) -> OpenClipEncoder:
    return OpenClipEncoder(spec, device=device)
