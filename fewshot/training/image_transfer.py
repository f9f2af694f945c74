"""Adaptation on a labelled source set of *other* classes (transfer learning), then few-shot on new classes.

``transfer_encoder`` (formerly ``adapt_encoder``) fine-tunes the last stages of a timm EfficientNet-style encoder
(``effnet-lite0`` by default) on a labelled source set, e.g. Omniglot's background set (964 classes), so that the
engine few-shots *new* classes (Omniglot's evaluation set) much better than with frozen ImageNet features. It is built
to fit in minutes on a small CPU:

1. images are resized to ``image_size`` (default 56 px; Omniglot is 105 px, ProtoNets use 28 px);
2. the frozen early part (stem + all stages but the last ``train_blocks``) runs once per image and its feature
   maps are cached in float16 (optionally ×4 for 0/90/180/270° rotations, each rotation a new class);
3. only the last ``train_blocks`` stages + ``conv_head``/``bn2`` are trained, with a cosine-softmax
   cross-entropy over the source classes (``loss="supervised"``) or a prototypical episodic loss
   (``loss="episodic"``), AdamW and a cosine learning-rate schedule, under a wall-time budget;
4. after each epoch, N-way 1-shot prototype accuracy on held-out *source* classes picks the best epoch (early
   stopping) — hyperparameters are never chosen on the target classes.

The result is an ``AdaptedTimmEncoder``: it embeds like any image encoder (paths, PIL images, uint8 arrays) at
``image_size``, is saved with ``FewShotEngine.save`` as a ``timm-dir:`` folder and reloads with the engine.

CLI: ``fewshot transfer --encoder effnet-lite0 --source images_background.npz --out DIR`` (``fewshot.cli.transfer``;
``fewshot adapt`` is its deprecated alias). Not to be confused with ``FewShotEngine.adapt`` (``fewshot.adapt``),
which adapts to *unlabeled* target data without training weights.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, get_args

import numpy as np

from fewshot._core import check_float, check_int, default_threads, torch_threads
from fewshot._progress import LOGGER as _ROOT_LOGGER
from fewshot.encoders.base import image_to_rgb
from fewshot.errors import EncoderUnavailableError, InvalidInputError

LOGGER = _ROOT_LOGGER.getChild("transfer")

TransferLoss = Literal["supervised", "episodic"]
LOSSES: tuple[str, ...] = get_args(TransferLoss)


@dataclass(frozen=True)
class TransferConfig:
    """Settings of ``transfer_encoder``, validated on construction (typed ``InvalidInputError``).

    The defaults were chosen on 64 held-out Omniglot *background* classes (20-way 1-shot validation accuracy,
    56 px, supervised, same ~25-min CPU budget: train_blocks 1 → 0.882, 2 → 0.930, 3 → 0.95), never on the
    evaluation set; see benchmarks/results/omniglot_adapt.md.

    Fields:
        train_blocks: trailing stages of ``model.blocks`` to train (plus ``conv_head``/``bn2``); effnet-lite0
            has 7 stages (the last three: 112, 192 and 320 channels). Earlier layers are frozen and cached.
        image_size: square input size (px) for training *and* for the adapted encoder afterwards.
        epochs: passes over the (rotated) source images; the best epoch on held-out classes is kept.
        loss: ``"supervised"`` (cosine-softmax cross-entropy over all source classes) or ``"episodic"``
            (prototypical loss on ``episode_way``-way 1-shot ``episode_query``-query episodes).
        rotations: also train on 90/180/270° rotations, each as a new class (×4 classes and cache/compute).
        batch_size: images per optimiser step (supervised).
        lr, weight_decay: AdamW settings (cosine schedule with a short warm-up; the head uses 10 × lr).
        holdout_classes: source classes held out for early stopping (0 = none: the last epoch is kept).
        val_episodes: held-out episodes per validation (5-way and 20-way 1-shot, prototype classifier).
        seed: seeds the class split, the data order and the head initialisation.
        max_minutes: wall-time budget for everything (caching + training); training stops when it is spent.
        num_threads: torch threads (None: ``fewshot._core.default_threads()``); restored afterwards.
    """

    train_blocks: int = 3
    image_size: int = 56
    epochs: int = 8
    loss: TransferLoss = "supervised"
    rotations: bool = False
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-4
    holdout_classes: int = 64
    episode_way: int = 32
    episode_query: int = 3
    val_episodes: int = 300
    seed: int = 0
    max_minutes: float = 30.0
    num_threads: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("train_blocks", 1), ("image_size", 16), ("epochs", 1), ("batch_size", 2),
                          ("holdout_classes", 0), ("episode_way", 2), ("episode_query", 1), ("val_episodes", 1),
                          ("seed", 0)):
            check_int(name, getattr(self, name), low)
        if self.num_threads is not None:
            check_int("num_threads", self.num_threads, 1)
        for name, inclusive in (("lr", False), ("weight_decay", True), ("max_minutes", False)):
            check_float(name, getattr(self, name), 0.0, inclusive=inclusive)
        if self.loss not in LOSSES:
            raise InvalidInputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not isinstance(self.rotations, (bool, np.bool_)):
            raise InvalidInputError(f"rotations must be True or False, got {self.rotations!r}")


#: the defaults as a plain dict (CLI defaults, reports)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TransferConfig)}


def _split(model: Any, train_blocks: int):
    """(frozen callable, trainable torch.nn.Sequential) of an EfficientNet-style timm model."""
    import torch.nn as nn

    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(model, a) for a in needed):
        raise EncoderUnavailableError(f"adapt_encoder supports EfficientNet/MobileNet-style timm models "
                                      f"(with {', '.join(needed)}); {type(model).__name__} has not all of them")
    n = len(model.blocks)
    if train_blocks > n:
        raise InvalidInputError(f"train_blocks={train_blocks} but the model has only {n} stages")
    start = n - train_blocks
    frozen = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:start])
    trainable = nn.Sequential(*model.blocks[start:], model.conv_head, model.bn2, model.global_pool)
    return frozen, trainable


def transfer_encoder(encoder: Any = "effnet-lite0", source: Any = None, config: TransferConfig | None = None, *,
                     progress: bool = True, device: str | None = "cpu", history: list | None = None,
                     **settings: Any):
    """Fine-tune the last stages of an image encoder on a labelled source set of other classes.

    Args:
        encoder: a registry name (``"effnet-lite0"``, ``"timm:..."``, ``"timm-dir:..."``) or a
            ``TimmImageEncoder``; it is copied, never changed.
        source: a ``fewshot.datasets.LabelledData`` of images (paths, PIL images or uint8 (H, W) / (H, W, 3)
            arrays), >= 2 classes with >= 2 images each (Omniglot background: 964 classes × 20).
        config: a ``TransferConfig``; ``settings`` (its field names) override single fields of it.
        progress: progress bars under ``fewshot._progress`` (shown once a step has run 2 s); False: none.
        device: torch device for the work (default CPU).
        history: if a list is given, one dict per validation is appended (epoch, seconds, loss, val_5w1s,
            val_20w1s).
    Returns:
        ``fewshot.encoders.timm_image.AdaptedTimmEncoder`` (pooled, L2-normalised features of the same dim);
        its ``info`` records the settings, the validation history and the wall time.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from fewshot._progress import progress as policy_bar
    from fewshot.datasets import LabelledData
    from fewshot.encoders.base import Encoder
    from fewshot.encoders.registry import load_encoder
    from fewshot.encoders.timm_image import AdaptedTimmEncoder, TimmImageEncoder, build_transform

    t_start = time.perf_counter()
    # ---------------------------------------------------------------- arguments
    if not isinstance(source, LabelledData):
        raise InvalidInputError(f"source must be a fewshot.datasets.LabelledData of images, got {type(source).__name__}"
                                "; load one with fewshot.datasets.load_dataset(path)")
    if source.kind != "image":
        raise InvalidInputError(f"source must hold images, got kind {source.kind!r} ({source.source})")
    try:
        cfg = replace(config or TransferConfig(), **settings)
    except TypeError as exc:  # an unknown setting name
        raise InvalidInputError(f"unknown transfer setting: {exc}; known: {sorted(DEFAULTS)}") from None
    train_blocks, image_size, epochs, loss = cfg.train_blocks, cfg.image_size, cfg.epochs, cfg.loss
    rotations, batch_size, lr, weight_decay = cfg.rotations, cfg.batch_size, cfg.lr, cfg.weight_decay
    holdout_classes, episode_way, episode_query = cfg.holdout_classes, cfg.episode_way, cfg.episode_query
    val_episodes, seed, max_minutes, num_threads = cfg.val_episodes, cfg.seed, cfg.max_minutes, cfg.num_threads
    classes = source.classes
    codes = source.label_codes(classes)
    counts = np.bincount(codes, minlength=len(classes))
    if len(classes) < 2 or counts.min() < 2:
        raise InvalidInputError(f"source needs >= 2 classes with >= 2 images each; {source.source} has "
                                f"{len(classes)} classes, the smallest with {int(counts.min())} images")
    if isinstance(encoder, str):
        base = load_encoder(encoder, device="cpu", cache=False)
    elif isinstance(encoder, Encoder):
        base = encoder
    else:
        raise InvalidInputError(f"encoder must be a registry name or a TimmImageEncoder, got {type(encoder).__name__}")
    if not isinstance(base, TimmImageEncoder):
        raise EncoderUnavailableError(f"encoder {base.name!r} is not a timm image encoder; transfer_encoder works "
                                      "with 'effnet-lite0', 'timm:...' or 'timm-dir:...'")
    arch = getattr(base, "arch", None) or (getattr(base.model, "pretrained_cfg", None) or {}).get("architecture")
    if not arch:
        raise EncoderUnavailableError(f"cannot tell the timm architecture of encoder {base.name!r}")

    threads = num_threads or default_threads()
    with torch_threads(threads):
        dev = torch.device(device or "cpu")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = copy.deepcopy(base.model).to(dev).float()
        frozen, trainable = _split(model, train_blocks)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trainable.parameters():
            p.requires_grad_(True)
        preprocess = {"input_size": image_size, "mean": tuple(base.preprocess_config["mean"]),
                      "std": tuple(base.preprocess_config["std"]), "interpolation": "bilinear", "crop_pct": 1.0}
        transform = build_transform(preprocess)

        # ------------------------------------------------------------ class split (source classes only)
        n_hold = holdout_classes if len(classes) - holdout_classes >= 2 and holdout_classes >= 5 else 0
        perm = rng.permutation(len(classes))
        hold = np.zeros(len(classes), bool)
        hold[perm[:n_hold]] = True
        train_rows = np.flatnonzero(~hold[codes])
        hold_rows = np.flatnonzero(hold[codes])
        train_map = -np.ones(len(classes), np.int64)
        train_map[~hold] = np.arange(int((~hold).sum()))
        n_rot = 4 if rotations else 1

        # ------------------------------------------------------------ cache the frozen part (float16)
        def encode_frozen(rows: np.ndarray, rot: int, desc: str) -> torch.Tensor:
            out = []
            step = 256
            for s in policy_bar(range(0, len(rows), step), desc=desc, show=None if progress else False, leave=False):
                ims = []
                for r in rows[s:s + step]:
                    im = image_to_rgb(source.inputs[int(r)])
                    if rot:
                        im = im.rotate(90 * rot, expand=True)
                    ims.append(transform(im))
                with torch.inference_mode():
                    out.append(frozen(torch.stack(ims).to(dev)).to(torch.float16).cpu())
            return torch.cat(out)

        frozen.eval()
        feats = torch.cat([encode_frozen(train_rows, k, f"caching features (rotation {90 * k}°)")
                           for k in range(n_rot)])
        labels = torch.from_numpy(np.concatenate([train_map[codes[train_rows]] * n_rot + k for k in range(n_rot)]))
        hold_feats = encode_frozen(hold_rows, 0, "caching held-out features") if n_hold else None
        hold_codes = codes[hold_rows]
        n_train_classes = int((~hold).sum()) * n_rot
        cache_seconds = time.perf_counter() - t_start

        # ------------------------------------------------------------ training
        dim = base.dim
        head = nn.Parameter(F.normalize(torch.randn(n_train_classes, dim, device=dev), dim=1))
        log_scale = nn.Parameter(torch.tensor(math.log(10.0), device=dev))
        params = [{"params": [p for p in trainable.parameters()], "lr": lr, "weight_decay": weight_decay},
                  {"params": [head], "lr": 10 * lr, "weight_decay": 0.0},
                  {"params": [log_scale], "lr": lr, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(params)
        n = len(labels)
        per_step = batch_size if loss == "supervised" else episode_way * (1 + episode_query)
        steps_per_epoch = max(1, n // per_step)
        total = epochs * steps_per_epoch
        warmup = min(50, total // 10)
        base_lrs = [g["lr"] for g in opt.param_groups]
        deadline = t_start + max_minutes * 60.0 - min(60.0, 0.03 * max_minutes * 60.0)  # room to validate
        by_class = [torch.nonzero(labels == c).flatten() for c in range(n_train_classes)] \
            if loss == "episodic" else None

        def embed(x: torch.Tensor) -> torch.Tensor:
            return F.normalize(trainable(x.float()), dim=1)

        def validate() -> dict:
            if hold_feats is None:
                return {}
            from fewshot.evaluation.episodes import run_episodic
            trainable.eval()
            with torch.inference_mode():
                emb = torch.cat([embed(hold_feats[i:i + 512]) for i in range(0, len(hold_feats), 512)]).numpy()
            trainable.train()
            local = np.unique(hold_codes, return_inverse=True)[1]
            out = {}
            for way in (5, 20):
                if way <= n_hold:
                    r = run_episodic("prototype", emb, local, n_way=way, n_shot=1, n_query=1,
                                     n_episodes=val_episodes, seed=seed + 1)
                    out[f"val_{way}w1s"] = round(r.accuracy, 4)
            return out

        def score(v: dict) -> float:
            return v.get("val_20w1s", v.get("val_5w1s", 0.0))

        record = {"epoch": 0, "seconds": round(time.perf_counter() - t_start, 1), **validate()}
        t_train = time.perf_counter()
        log = [record]
        best = (score(record), 0, copy.deepcopy(trainable.state_dict()))
        step = 0
        stopped_early = False
        trainable.train()
        for epoch in range(1, epochs + 1):
            order = torch.from_numpy(rng.permutation(n))
            losses = []
            bar = policy_bar(range(steps_per_epoch), desc=f"adapting epoch {epoch}/{epochs}",
                             show=None if progress else False, leave=False)
            for i in bar:
                # progress through the schedule: by steps, or by the time budget when that runs out first,
                # so a run cut by max_minutes still ends with an annealed learning rate
                done = max((step - warmup) / max(1, total - warmup),
                           (time.perf_counter() - t_train) / max(1e-9, deadline - t_train))
                if done >= 1.0 and step < total:
                    stopped_early = True
                    break
                factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
                for g, lr0 in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr0 * factor
                if loss == "supervised":
                    idx = order[i * batch_size:(i + 1) * batch_size]
                    z = embed(feats[idx].to(dev))
                    logits = log_scale.exp() * z @ F.normalize(head, dim=1).T
                    value = F.cross_entropy(logits, labels[idx].to(dev))
                else:
                    way = min(episode_way, n_train_classes)
                    cls = rng.choice(n_train_classes, way, replace=False)
                    sup, qry = [], []
                    assert by_class is not None   # built for loss == "episodic" (this branch)
                    for c in cls:
                        rows = by_class[c]
                        pick = rows[torch.from_numpy(rng.permutation(len(rows))[:1 + episode_query])]
                        sup.append(pick[:1])
                        qry.append(pick[1:])
                    sup_i, qry_i = torch.cat(sup), torch.cat(qry)
                    z = embed(feats[torch.cat([sup_i, qry_i])].to(dev))
                    protos, zq = z[:len(sup_i)], z[len(sup_i):]
                    target = torch.cat([torch.full((len(q),), j, dtype=torch.long) for j, q in enumerate(qry)])
                    logits = log_scale.exp() * zq @ F.normalize(protos, dim=1).T
                    value = F.cross_entropy(logits, target.to(dev))
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                step += 1
                losses.append(float(value.detach()))
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
            record = {"epoch": epoch, "steps": step, "seconds": round(time.perf_counter() - t_start, 1),
                      "loss": round(float(np.mean(losses)), 4) if losses else None, **validate()}
            log.append(record)
            if history is not None:
                history.append(record)
            LOGGER.info("transfer epoch %s", json.dumps(record))
            if hold_feats is None or score(record) >= best[0]:
                best = (score(record), epoch, copy.deepcopy(trainable.state_dict()))
            if stopped_early:
                break
        trainable.load_state_dict(best[2])
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        wall = time.perf_counter() - t_start
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = None
        info = {"base_encoder": base.name, "arch": arch, "source": source.source, "source_classes": len(classes),
                "source_images": len(source), "holdout_classes": n_hold, "train_blocks": train_blocks,
                "image_size": image_size, "epochs": epochs, "best_epoch": best[1], "stopped_early": stopped_early,
                "loss": loss, "rotations": bool(rotations), "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "seed": seed, "num_threads": threads, "steps": step,
                "cache_seconds": round(cache_seconds, 1), "wall_seconds": round(wall, 1), "loadavg_end": load,
                "history": log}
        return AdaptedTimmEncoder(model.cpu(), arch, preprocess, device="cpu", info=info)


def adapt_encoder(*args: Any, **kwargs: Any):
    """Deprecated name of ``transfer_encoder`` (kept for one release)."""
    warnings.warn("fewshot.training.image_transfer.adapt_encoder is now transfer_encoder", DeprecationWarning,
                  stacklevel=2)
    return transfer_encoder(*args, **kwargs)


def load_source(path: str):
    """An Omniglot .npz as uint8 arrays (fast), anything else through fewshot.datasets.load_dataset."""
    from fewshot.datasets import load_dataset, load_omniglot, split_spec
    if split_spec(path)[0].lower().endswith(".npz"):
        return load_omniglot(split_spec(path)[0], as_arrays=True)
    return load_dataset(path)
