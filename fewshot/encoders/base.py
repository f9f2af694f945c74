"""The Encoder protocol every backend implements, plus shared input checks.

An encoder is frozen: it maps texts and/or images to float32, L2-normalised vectors of shape (n, dim).
"""
from __future__ import annotations

import os
import warnings
from abc import ABC
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from fewshot._core import l2_normalise
from fewshot._progress import progress
from fewshot.errors import EmptyInputError, ImageReadError, InvalidInputError

ImageInput = Union[str, "os.PathLike[str]", Any]  # a path or a PIL.Image.Image

#: Largest image (in pixels) we decode; PIL's decompression-bomb guard raises above this.
MAX_IMAGE_PIXELS = 64_000_000


class Encoder(ABC):
    """A frozen embedding model.

    Attributes:
        name: the registry name that rebuilds this encoder (``load_encoder(name)``).
        dim: the embedding dimension.
        modalities: subset of ``{"text", "image"}`` this encoder embeds.
    """

    name: str
    dim: int
    modalities: frozenset[str]
    # Declared for type checking only (no class-level value, so ``getattr(encoder, ..., default)`` callers keep
    # their defaults): set by the encoders that have them.
    #: local folder/file or hub name of the weights (the embedding cache fingerprints a local one)
    source: str
    #: the device the encoder runs on (torch or onnxruntime)
    device: str
    #: FewShotEngine.save copies the model (``save_to``) into the save when True; read with default True
    bundle_with_engine: bool

    def encode_text(self, texts: Sequence[str], batch_size: int = 64,
                    show_progress_bar: bool | None = None) -> np.ndarray:
        """Embed texts. Returns float32 (len(texts), dim), rows L2-normalised."""
        raise InvalidInputError(f"encoder {self.name!r} does not embed text; use an image input or a "
                                "text/CLIP encoder such as 'minilm' or 'clip:...'")

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 32,
                      show_progress_bar: bool | None = None) -> np.ndarray:
        """Embed images (paths or PIL images). Returns float32 (len(images), dim), rows L2-normalised."""
        raise InvalidInputError(f"encoder {self.name!r} does not embed images; use a text input or an "
                                "image/CLIP encoder such as 'effnet-lite0' or 'clip:...'")

    def encode(self, inputs: Sequence[Any], **kwargs: Any) -> np.ndarray:
        """Embed a homogeneous list: all strings → text (for a text-capable encoder), else images."""
        inputs = check_input_list(inputs)
        if all(isinstance(x, str) for x in inputs) and "text" in self.modalities:
            return self.encode_text(inputs, **kwargs)
        if "image" in self.modalities:
            return self.encode_images(inputs, **kwargs)
        raise InvalidInputError(f"encoder {self.name!r} embeds text only; got non-string inputs "
                                f"(first: {type(inputs[0]).__name__})")

    @property
    def zero_shot_templates(self) -> list[str]:
        """Prompt templates ('{}' = class name or description) for zero-shot class vectors."""
        from fewshot.templates import TEXT_TEMPLATES
        return list(TEXT_TEMPLATES)

    def describe(self) -> dict[str, Any]:
        """JSON-able description saved beside an engine."""
        return {"name": self.name, "dim": int(self.dim), "modalities": sorted(self.modalities)}


def check_input_list(inputs: Any) -> list[Any]:
    """Return ``inputs`` as a non-empty list, or raise a typed error."""
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__"):
        raise InvalidInputError("inputs must be a list of texts or images, not a single "
                                f"{type(inputs).__name__}; wrap it in a list")
    inputs = list(inputs)
    if not inputs:
        raise EmptyInputError("inputs is empty; pass at least one text or image")
    return inputs


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a list of texts (non-empty list of str). Empty strings are allowed and embed as ''."""
    texts = check_input_list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}] is a {type(t).__name__}, expected str")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"texts[{i}] is not valid Unicode text ({exc.reason} at position "
                                    f"{exc.start}); lone surrogates cannot be tokenised") from None
    return texts


def load_image_rgb(image: ImageInput):
    """Open a path or take a PIL image, returning an RGB PIL image; typed errors for bad files."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    if isinstance(image, Image.Image):
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ImageReadError(f"image of {image.width}x{image.height} pixels is larger than the "
                                 f"{MAX_IMAGE_PIXELS:,}-pixel limit")
        return image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise ImageReadError(f"an image input must be a path or a PIL.Image, got {type(image).__name__}")
    path = os.fspath(image)
    try:
        with warnings.catch_warnings():
            # Pillow only raises above 2x MAX_IMAGE_PIXELS and merely warns in between: refuse both
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"image {path} is too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot read {path} as an image: {exc}") from None


def image_to_rgb(image: Any):
    """A path, PIL image or image array ((H, W) grey or (H, W, 1|3); uint8, bool → 0/255, or floats in
    [0, 1] or [0, 255]) → RGB PIL image; typed errors for bad files and arrays."""
    if isinstance(image, np.ndarray):
        from PIL import Image

        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)) or image.size == 0:
            raise ImageReadError(f"an image array must be (H, W) or (H, W, 3), got shape {image.shape}")
        arr = image
        if arr.dtype == bool:
            arr = np.where(arr, np.uint8(255), np.uint8(0))
        elif arr.dtype != np.uint8:
            if not np.all(np.isfinite(arr)):
                raise ImageReadError("an image array holds NaN or inf values")
            arr = np.clip(arr * (255.0 if arr.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
    return load_image_rgb(image)


def encode_image_batches(images: Sequence[Any], preprocess: Any, forward: Any, *, name: str, device: Any,
                         batch_size: int = 32, show_progress_bar: bool | None = None,
                         to_rgb: Any = load_image_rgb) -> np.ndarray:
    """The one torch image loop: ``to_rgb`` (input → RGB PIL) → ``preprocess`` (PIL → (3, H, W) tensor) →
    ``forward`` ((b, 3, H, W) → (b, dim)), in batches under inference mode. Returns (n, dim) float32,
    L2-normalised; a progress bar under ``fewshot._progress`` (after 2 s, or as ``show_progress_bar`` says)."""
    import torch

    images = check_input_list(images)
    out = []
    for start in progress(range(0, len(images), batch_size), show=show_progress_bar,
                          desc=f"encoding images ({name})"):
        batch = torch.stack([preprocess(to_rgb(im)) for im in images[start:start + batch_size]])
        with torch.inference_mode():
            out.append(forward(batch.to(device)).float().cpu().numpy())
    return l2_normalise(np.concatenate(out))


def default_device() -> str:
    """'cuda' when a GPU is visible to torch, else 'cpu'."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def downloads_allowed() -> bool:
    """fewshot never downloads weights unless the user sets FEWSHOT_ALLOW_DOWNLOAD=1."""
    return os.environ.get("FEWSHOT_ALLOW_DOWNLOAD", "0") == "1"


class hub_offline:
    """Context manager: put huggingface_hub in offline mode (unless downloads are allowed), so a missing
    model fails at once instead of retrying the network for a minute."""

    def __enter__(self) -> hub_offline:
        self._saved = None
        if downloads_allowed():
            return self
        try:
            import huggingface_hub.constants as constants
        except ImportError:
            return self
        self._constants = constants
        self._saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            self._constants.HF_HUB_OFFLINE = self._saved
