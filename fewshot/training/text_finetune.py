"""Refinement as labels arrive: pick a method by how many labels each class has, and fine-tune the text encoder.

Two entry points for ``FewShotEngine.refine``:

* ``finetune_encoder(texts, labels, ...) -> EncoderRefineResult`` — light supervised fine-tune of a
  sentence-transformers encoder on the support set, returning a new encoder (in memory, or saved in
  ``output_dir`` and reloadable as ``st:<dir>``).

Frozen-embedding methods (``fusion``, ``linear``, ``finetune``) live in ``fewshot.classifiers``; the engine fits
them on its index with ``make_classifier(name).fit(index)``.

Encoder fine-tune (``finetune_encoder``)
----------------------------------------
A cosine-softmax head ``W`` (one unit vector per class) is initialised from the frozen encoder's class
prototypes blended with the class-name prompt vectors; the encoder (and the head) are trained with
cross-entropy of ``scale · cos(f(x), W_c)`` on the support texts, the class names counting as one extra
example each. Layer-wise learning-rate decay: the top transformer layer gets ``lr``, each layer below
``lr · layer_decay``, the embeddings the lowest; ``train_layers=N`` freezes all but the last N layers.
Early stopping: a stratified part of the support (``val_fraction`` of each class with >= 3 examples, at
least one) is held out; after each epoch the held-out accuracy of the head is measured and training stops
after ``patience`` epochs without improvement; the best epoch count is then used to retrain on the whole
support (``refit=True``). Without any class of >= 3 examples nothing can be held out and ``default_epochs``
(fixed a priori) are run. Every knob is fixed in the code or chosen on the support set; nothing looks at test
data.

``loss="contrastive"`` (the default) trains without a head, SetFit-like but batch-wise: supervised contrastive
loss (Khosla et al. 2020) with temperature ``temperature`` over P×K batches (``classes_per_batch`` classes ×
up to 4 examples each), pulling examples of a class together and pushing other classes away; early stopping
then measures held-out accuracy of nearest class prototypes (computed from the training part). On dev data
(Banking77/CLINC150 train examples outside the support, never the test split) it gave +1.5 to +3 points over
the frozen encoder at 10 shots, and tighter classes reject out-of-scope inputs better; ``loss="cross-entropy"``
is the cosine-head variant above. ``refit=False`` keeps the early-stopped model trained without the held-out
part (``EncoderRefineResult.trained_texts`` excludes it), but that part chose the epoch count, so it is not
a fair sample for open-set thresholds: ``FewShotEngine.refine("encoder")`` keeps a further part of the
support away from the fine-tune altogether and calibrates on that (``selection_texts`` names the held-out
part).
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from fewshot._core import check_float, check_int, default_threads, torch_threads
from fewshot.errors import InvalidInputError

if TYPE_CHECKING:
    from fewshot.encoders.sentence import SentenceTransformerEncoder

FinetuneLoss = Literal["contrastive", "cross-entropy"]


@dataclass
class EncoderRefineResult:
    """What ``finetune_encoder`` returns.

    Attributes:
        encoder: a ``SentenceTransformerEncoder`` over the tuned model (name ``'st:<directory>'`` when saved, else
            ``'<base>+tuned-<weights digest>'``).
        directory: where the tuned model is saved (reload with ``load_encoder('st:' + directory)``); None when it
            was kept in memory (no ``output_dir``).
        epochs: epochs trained on the full support (0: fine-tuning never beat the frozen encoder on the
            held-out support, so the encoder is the unchanged base model).
        history: per-epoch dicts (phase, epoch, loss, val_accuracy, seconds).
        seconds: total wall time.
        trained_texts: the support texts the returned encoder was trained on (all of them after a refit; without
            the held-out part when ``refit=False``; none when the base model was kept).
        selection_texts: the held-out texts whose accuracy chose the epoch count (none when the base model was
            kept): not trained on, but not a fair sample for calibration either.
    """

    encoder: SentenceTransformerEncoder
    directory: str | None
    epochs: int
    history: list = field(default_factory=list)
    seconds: float = 0.0
    trained_texts: frozenset = frozenset()
    selection_texts: frozenset = frozenset()   # held out, but their accuracy picked the (> 0) epoch count


def _holdout(labels: np.ndarray, fraction: float, seed: int, min_class: int = 3,
             eligible: np.ndarray | None = None) -> np.ndarray:
    """(m,) bool mask: ceil(fraction·n_c) examples (>= 1) of every class with n_c >= ``min_class`` examples,
    drawn from its ``eligible`` ones (default all; fewer if fewer are eligible)."""
    labels = np.asarray(labels, np.int64)
    eligible = np.ones(len(labels), bool) if eligible is None else np.asarray(eligible, bool)
    rng = np.random.default_rng(seed)
    picked = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        pool = idx[eligible[idx]]
        if len(idx) >= min_class and len(pool):
            picked[rng.choice(pool, min(len(pool), max(1, int(math.ceil(fraction * len(idx))))), replace=False)] = True
    return picked


def calibration_holdout(labels: np.ndarray, fraction: float, seed: int, min_total: int,
                        eligible: np.ndarray | None = None) -> np.ndarray:
    """(m,) bool mask: ceil(fraction·n_c) examples (>= 1) of every class with n_c >= 5 examples, drawn from the
    ``eligible`` ones (default all; e.g. those no earlier fine-tune saw), to keep away from an encoder fine-tune
    so that open-set thresholds can be calibrated on inputs new to it (with fraction <= 0.4 each such class
    keeps >= 3 for training and early stopping). All False when that makes fewer than ``min_total``. ``seed``:
    the fine-tune's; the draw is offset from it, independent of the fine-tune's own early-stopping hold-out."""
    if fraction <= 0 or not len(labels):
        return np.zeros(len(labels), bool)
    kept_away = _holdout(labels, fraction, seed + 7919, min_class=5, eligible=eligible)
    return kept_away if kept_away.sum() >= min_total else np.zeros(len(labels), bool)


def _load_st(base: Any) -> tuple[Any, str]:
    """A fresh trainable SentenceTransformer copy of ``base`` (encoder object, registry name or path)."""
    from fewshot.encoders import Encoder, load_encoder

    enc = base if isinstance(base, Encoder) else load_encoder(base)
    model = getattr(enc, "model", None)
    if model is None or not hasattr(model, "tokenize"):
        raise InvalidInputError(f"encoder {getattr(enc, 'name', base)!r} is not a sentence-transformers model; "
                         "encoder fine-tuning needs 'minilm' or 'st:<name|path>'")
    return copy.deepcopy(model).to("cpu" if getattr(enc, "device", "cpu") == "cpu" else enc.device), enc.name


def _param_groups(model, lr: float, layer_decay: float, train_layers: int | None, head,
                  head_lr_mult: float) -> list[dict]:
    """Per-layer learning rates for a BERT-like body (embeddings < layer 0 < ... < top layer)."""
    named = list(model.named_parameters())
    layer_ids = sorted({int(n.split(".layer.")[1].split(".")[0]) for n, _ in named if ".layer." in n})
    top = max(layer_ids) if layer_ids else 0
    groups: dict[float, list] = {}
    for name, p in named:
        if ".layer." in name:
            depth = top - int(name.split(".layer.")[1].split(".")[0])
        elif "embeddings" in name:
            depth = top + 1
        else:
            depth = 0  # pooler / dense heads on top
        trainable = train_layers is None or (".layer." in name and depth < train_layers)
        p.requires_grad_(bool(trainable))
        if trainable:
            groups.setdefault(lr * layer_decay ** depth, []).append(p)
    out = [{"params": ps, "lr": g} for g, ps in groups.items()]
    if head_lr_mult > 0:
        out.append({"params": [head], "lr": lr * head_lr_mult})
    else:
        head.requires_grad_(False)
    return out


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of ``finetune_encoder``, validated on construction (typed ``InvalidInputError``).

    Fields:
        loss: ``'contrastive'`` (supervised contrastive over P×K batches, no head) or ``'cross-entropy'``
            (cosine-softmax head initialised from prototypes and class texts).
        lr: learning rate of the top layer (None: 2e-5 contrastive, 3e-5 cross-entropy); layer_decay: factor per
            layer below it (None: 1.0 contrastive, 0.8 cross-entropy).
        train_layers: only the last N transformer layers are trained (None = all).
        batch_size: texts per step (cross-entropy); scale: logit scale of the cosine head.
        temperature: of the contrastive loss; classes_per_batch: P of its P×K batches.
        max_epochs: cap for early stopping; default_epochs: epochs when nothing is held out.
        patience: epochs without held-out improvement before stopping; val_fraction: share of each class (>= 3
            examples) held out for early stopping (0: none, ``default_epochs`` are run).
        refit: retrain on the whole support for the chosen number of epochs.
        cache_frozen_bottom: with ``train_layers`` set, run the frozen layers once per text and train from their
            cached output (``fewshot.training.frozen_bottom``): ~40% faster, ~0.1-0.2 points less accurate.
        max_seconds: stop early (after the current epoch) once training took this long.
        weight_decay: AdamW; head_lr_mult: the head's learning rate over ``lr`` (cross-entropy).
        interpolate: share of the fine-tuned weights in the returned encoder, the rest being the base model's
            (weight-space ensembling, WiSE-FT: Wortsman et al. 2022); 1.0 returns the fine-tuned weights as trained.
            Not a default: screened for ``refine("encoder")`` at 10 shots on held-out TRAIN rows (draws 0-2),
            0.5 / 0.75 gave Banking77 +0.50 / +0.22 but StackOverflow -1.73 / -0.53 against 1.0.
        seed: seeds torch, the hold-out split and batch order (same seed → same weights).
        num_threads: torch CPU threads while training (None: ``fewshot._core.default_threads()``). Restored after.
    """

    loss: FinetuneLoss = "contrastive"
    lr: float | None = None
    layer_decay: float | None = None
    train_layers: int | None = None
    batch_size: int = 32
    scale: float = 20.0
    temperature: float = 0.1
    classes_per_batch: int = 16
    max_epochs: int = 8
    default_epochs: int = 3
    patience: int = 2
    val_fraction: float = 0.2
    refit: bool = True
    cache_frozen_bottom: bool = False
    max_seconds: float | None = None
    weight_decay: float = 0.01
    head_lr_mult: float = 50.0
    interpolate: float = 1.0
    seed: int = 0
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in get_args(FinetuneLoss):
            raise InvalidInputError(f"loss must be 'contrastive' or 'cross-entropy', got {self.loss!r}")
        for name in ("lr", "layer_decay", "max_seconds"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), 0.0)
        for name in ("scale", "temperature"):
            check_float(name, getattr(self, name), 0.0)
        for name, inclusive in (("weight_decay", True), ("head_lr_mult", True)):
            check_float(name, getattr(self, name), 0.0, inclusive=inclusive)
        for name, low in (("batch_size", 1), ("classes_per_batch", 2), ("max_epochs", 1), ("default_epochs", 1),
                          ("patience", 1), ("seed", 0)):
            check_int(name, getattr(self, name), low)
        for name in ("train_layers", "num_threads"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        if not 0.0 < check_float("interpolate", self.interpolate, 0.0) <= 1.0:
            raise InvalidInputError(f"interpolate must be in (0, 1], got {self.interpolate}")
        if not 0.0 <= check_float("val_fraction", self.val_fraction, 0.0, inclusive=True) < 1.0:
            raise InvalidInputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("refit", "cache_frozen_bottom"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidInputError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def contrastive(self) -> bool:
        return self.loss == "contrastive"

    def resolved(self) -> FinetuneConfig:
        """Loss-dependent defaults filled in (lr, layer_decay; no head for the contrastive loss)."""
        return replace(self, lr=self.lr if self.lr is not None else (2e-5 if self.contrastive else 3e-5),
                       layer_decay=self.layer_decay if self.layer_decay is not None else
                       (1.0 if self.contrastive else 0.8),
                       head_lr_mult=0.0 if self.contrastive else self.head_lr_mult)


def finetune_encoder(texts: Sequence[str], labels: Sequence[int] | np.ndarray,
                     class_names: Sequence[str | Sequence[str]] | None = None, base: Any = "minilm",
                     config: FinetuneConfig | None = None, *, output_dir: str | os.PathLike | None = None,
                     show_progress_bar: bool | None = None, **settings: Any) -> EncoderRefineResult:
    """Fine-tune a sentence-transformers encoder on labelled support texts (see the module docstring).

    Args:
        texts: the m support texts; labels: (m,) class indices in [0, C).
        class_names: per class, a name/description (humanised) or several texts for it (e.g. prompt templates
            filled with it): the head's prior is the normalised mean of their embeddings, and each text is one
            extra training example of its class. ``None`` → head from prototypes only; every class needs examples.
        base: the encoder to start from (an ``Encoder``, a registry name such as ``'minilm'``, or ``'st:<path>'``).
        config: a ``FinetuneConfig``; ``settings`` (its field names) override single fields of it.
        output_dir: where to save the tuned model (default: nowhere, it stays in memory).
        show_progress_bar: True / False forces the epoch bar on / off; None (default) shows it once the fine-tune
            has run 2 s (``fewshot._progress``).
    Returns:
        EncoderRefineResult (encoder, directory, epochs, history, seconds).
    """
    import torch

    try:
        cfg = replace(config or FinetuneConfig(), **settings).resolved()
    except TypeError as exc:  # an unknown setting name
        raise InvalidInputError(f"unknown fine-tune setting: {exc}; known: "
                                f"{sorted(f.name for f in fields(FinetuneConfig))}") from None
    with torch_threads(cfg.num_threads or default_threads()):
        return _finetune(torch, texts, labels, class_names, base, cfg, output_dir, show_progress_bar)


def _finetune(torch, texts, labels, class_names, base, cfg: FinetuneConfig, output_dir, show_progress_bar):
    from fewshot._progress import progress
    from fewshot.encoders.sentence import SentenceTransformerEncoder
    from fewshot.training.frozen_bottom import BottomCache, top_layers_only

    assert cfg.lr is not None and cfg.layer_decay is not None  # filled in by FinetuneConfig.resolved()
    lr, layer_decay, train_layers, batch_size, scale = cfg.lr, cfg.layer_decay, cfg.train_layers, cfg.batch_size, \
        cfg.scale
    max_epochs, default_epochs, patience, val_fraction = cfg.max_epochs, cfg.default_epochs, cfg.patience, \
        cfg.val_fraction
    refit, max_seconds, weight_decay, seed = cfg.refit, cfg.max_seconds, cfg.weight_decay, cfg.seed
    head_lr_mult, contrastive, temperature = cfg.head_lr_mult, cfg.contrastive, cfg.temperature
    classes_per_batch = cfg.classes_per_batch
    t_start = time.perf_counter()
    texts = list(texts)
    y = np.asarray(labels, np.int64)
    if len(texts) != len(y) or not len(texts):
        raise InvalidInputError(f"texts ({len(texts)}) and labels ({len(y)}) must be non-empty and of equal length")
    C = int(max(y.max() + 1, len(class_names) if class_names is not None else 0))
    # one list of texts per class: a plain name is a list of one
    class_texts = None if class_names is None else [[c] if isinstance(c, str) else list(c) for c in class_names]
    if class_texts is not None and any(not t or not all(isinstance(x, str) and x.strip() for x in t)
                                       for t in class_texts):
        raise InvalidInputError("class_names must give every class a non-empty text (or non-empty texts)")
    name_texts = [t for texts_c in class_texts for t in texts_c] if class_texts is not None else []
    name_y = np.asarray([c for c, texts_c in enumerate(class_texts or []) for _ in texts_c], np.int64)
    if class_names is None and len(np.unique(y)) < C:
        raise InvalidInputError("every class needs an example when class_names is None")
    model0, base_name = _load_st(base)
    device = next(model0.parameters()).device  # inputs, labels and the head live where the model does
    val = _holdout(y, val_fraction, seed) if val_fraction > 0 else np.zeros(len(y), bool)
    can_validate = val.any()
    bottom = BottomCache.build(model0, texts + name_texts, train_layers, lambda m, t: _tokenize(m, t, device)) \
        if cfg.cache_frozen_bottom else None

    def run(train_idx: np.ndarray, n_epochs: int, val_idx: np.ndarray | None, phase: str, hist: list):
        model = copy.deepcopy(model0)
        params = list(model.parameters())  # by object: names change while only the top layers run
        with top_layers_only(model, bottom) as set_batch:
            return train(model, params, set_batch, train_idx, n_epochs, val_idx, phase, hist)

    def train(model, params: list, set_batch, train_idx: np.ndarray, n_epochs: int, val_idx: np.ndarray | None,
              phase: str, hist: list):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed + 1)
        model.train()
        tr_texts = [texts[i] for i in train_idx]
        tr_y = y[train_idx]
        with torch.no_grad():
            model.eval()
            emb = _encode(model, tr_texts, batch_size, set_batch)
            names = None
            if class_texts is not None:  # (C, d): normalised mean embedding of each class's texts
                e = _encode(model, name_texts, batch_size, set_batch)
                names = torch.nn.functional.normalize(torch.zeros(C, e.shape[1], device=device).index_add_(
                    0, torch.from_numpy(name_y).to(device), e), dim=1)
            model.train()
        protos = torch.zeros(C, emb.shape[1], device=device).index_add_(0, torch.from_numpy(tr_y).to(device), emb)
        init = protos + (names if names is not None else 0)
        head = torch.nn.Parameter(torch.nn.functional.normalize(init, dim=1))
        all_texts = tr_texts + name_texts
        all_y = np.concatenate([tr_y, name_y]) if class_texts is not None else tr_y
        opt = torch.optim.AdamW(_param_groups(model, lr, layer_decay, train_layers, head, head_lr_mult),
                                weight_decay=weight_decay)
        steps_per_epoch = int(math.ceil(len(all_texts) / batch_size))
        if contrastive and np.bincount(all_y).max() < 2:  # _pk_batches would return no batch at all
            raise InvalidInputError("the contrastive fine-tune needs a class with two or more texts (examples, "
                                    "or one example plus its class name)")
        base_lrs = [g["lr"] for g in opt.param_groups]

        def set_lr(start: float, end: float) -> None:
            """Linear warm-up over the first 10% of training, then linear decay to 0; ``start``/``end``: the
            share of training done before / after this step (so the schedule fits however many batches come)."""
            factor = min(1.0, end / 0.1) * max(0.0, 1.0 - start)
            for group, base_lr in zip(opt.param_groups, base_lrs):
                group["lr"] = base_lr * factor
        def validate() -> float:
            assert val_idx is not None   # called only when there is a held-out part
            with torch.no_grad():
                model.eval()
                v = _encode(model, [texts[i] for i in val_idx], batch_size, set_batch)
                if contrastive:  # nearest prototype of the training part (+ name vector): no head to ask
                    e = _encode(model, all_texts, batch_size, set_batch)
                    w = torch.zeros(C, e.shape[1], device=device).index_add_(0, torch.from_numpy(all_y).to(device), e)
                else:
                    w = head
                model.train()
                return float((torch.argmax(v @ torch.nn.functional.normalize(w, dim=1).T, 1).cpu().numpy()
                              == y[val_idx]).mean())

        best: tuple[float, int, list | None] = (-1.0, 0, None)
        bad = 0
        if val_idx is not None:  # epoch 0: the frozen encoder; fine-tuning must beat it to be kept
            acc0 = validate()
            hist.append({"phase": phase, "epoch": 0, "val_accuracy": acc0})
            best = (acc0, 0, None)
        bar = progress(total=n_epochs, desc=f"refine encoder ({phase}, epochs)", show=show_progress_bar,
                       leave=False)
        for epoch in range(1, n_epochs + 1):
            t0 = time.perf_counter()
            order = rng.permutation(len(all_texts))
            batches = _pk_batches(all_y, classes_per_batch, rng) if contrastive else \
                [order[s * batch_size:(s + 1) * batch_size] for s in range(steps_per_epoch)]
            losses = []
            for step, b in enumerate(batches):
                set_lr((epoch - 1 + step / len(batches)) / n_epochs, (epoch - 1 + (step + 1) / len(batches)) / n_epochs)
                batch_texts = [all_texts[i] for i in b]
                set_batch(batch_texts)
                out = model(_tokenize(model, batch_texts, device))["sentence_embedding"]
                out = torch.nn.functional.normalize(out, dim=1)
                if contrastive:
                    loss = supervised_contrastive_loss(out, torch.from_numpy(all_y[b]).to(device), temperature)
                else:
                    logits = scale * out @ torch.nn.functional.normalize(head, dim=1).T
                    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(all_y[b]).to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(step=f"{step + 1}/{len(batches)}", loss=f"{np.mean(losses):.3f}", refresh=False)
                bar.update(0)  # draws the bar once the policy's delay has passed, mid-epoch too
            bar.update(1)
            rec = {"phase": phase, "epoch": epoch, "loss": float(np.mean(losses)),
                   "seconds": time.perf_counter() - t0}
            if val_idx is not None:
                acc = validate()
                rec["val_accuracy"] = acc
                if acc > best[0] + 1e-9:
                    best, bad = (acc, epoch, None if refit else [p.detach().clone() for p in params]), 0
                else:
                    bad += 1
            hist.append(rec)
            if val_idx is not None and bad >= patience:
                break
            if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
                break
        bar.close()
        if best[2] is not None:  # no refit: keep the best epoch's weights, not the last
            with torch.no_grad():
                for p, kept in zip(params, best[2]):
                    p.copy_(kept)
        model.eval()
        return model, (best[1] if val_idx is not None else epoch)

    history: list = []
    all_idx = np.arange(len(y))
    trained = all_idx
    if can_validate:
        model, best_epochs = run(all_idx[~val], max_epochs, all_idx[val], "select", history)
        epochs = best_epochs
        trained = all_idx[~val]
        if epochs == 0:  # no epoch beat the frozen encoder on the held-out support: keep it unchanged
            model = copy.deepcopy(model0).eval()
            trained = all_idx[:0]
        elif refit:
            model, _ = run(all_idx, epochs, None, "refit", history)
            trained = all_idx
    else:
        epochs = default_epochs
        model, _ = run(all_idx, epochs, None, "train", history)
    if cfg.interpolate < 1.0 and len(trained):
        _interpolate_weights(torch, model, model0, cfg.interpolate)
    if contrastive and class_names is None:  # a class with one text in training never formed a pair
        counts = np.bincount(y[trained], minlength=C)
        trained = trained[counts[y[trained]] >= 2]
    directory: str | None = None
    if output_dir is not None:
        directory = str(output_dir)
        os.makedirs(directory, exist_ok=True)
        model.save(directory)
        encoder = SentenceTransformerEncoder(directory, name=f"st:{directory}", device=str(device))
    else:  # kept in memory, on the base encoder's device: no temporary folder left behind; an engine save writes it
        encoder = SentenceTransformerEncoder.from_model(model, name=f"{base_name}+tuned-{_digest(model)}")
    return EncoderRefineResult(encoder=encoder, directory=directory, epochs=int(epochs), history=history,
                               seconds=time.perf_counter() - t_start,
                               trained_texts=frozenset(texts[i] for i in trained),
                               selection_texts=frozenset(texts[i] for i in all_idx[val])
                               if can_validate and epochs else frozenset())  # 0 epochs: the base encoder


def _interpolate_weights(torch, model, base, share: float) -> None:
    """In place: every floating-point tensor of ``model`` becomes ``share · tuned + (1 − share) · base``."""
    base_state = base.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.mul_(share).add_(base_state[name].to(tensor.device), alpha=1.0 - share)


def _digest(model: Any) -> str:
    """A short fingerprint of the trained weights (names tuned encoders apart, e.g. in embedding caches)."""
    import hashlib

    h = hashlib.sha256()
    for _, p in sorted(model.named_parameters())[-4:]:
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def _pk_batches(labels: np.ndarray, classes_per_batch: int, rng: np.random.Generator,
                per_class: int = 4) -> list[np.ndarray]:
    """One epoch of P×K batches over (m,) ``labels``: each batch holds ``classes_per_batch`` classes with up to
    ``per_class`` examples each; every example with a classmate appears once (singletons cannot form a pair):
    when one class is left over, its remaining examples join random earlier batches, ``per_class`` at a time."""
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    batches: list[np.ndarray] = []
    while True:
        open_classes = [c for c, ids in pools.items() if len(ids) >= 2]
        if len(open_classes) < 2:
            if open_classes:  # one class left: its rest goes, in pairs or more, into random earlier batches
                rest = pools[open_classes[0]]
                chunks = [rest[i:i + per_class] for i in range(0, len(rest), per_class)]
                if len(chunks) > 1 and len(chunks[-1]) == 1:
                    chunks[-2] = chunks[-2] + chunks.pop()
                for chunk in chunks:
                    if batches:
                        k = int(rng.integers(len(batches)))
                        batches[k] = np.concatenate([batches[k], np.asarray(chunk, np.int64)])
                    else:
                        batches.append(np.asarray(chunk, np.int64))
            break
        chosen = rng.choice(open_classes, min(classes_per_batch, len(open_classes)), replace=False)
        batch = []
        for c in chosen:
            take = per_class if len(pools[c]) - per_class != 1 else per_class - 1  # never leave a singleton
            batch += pools[c][:take]
            pools[c] = pools[c][take:]
        batches.append(np.asarray(batch, np.int64))
    return batches


def supervised_contrastive_loss(embeddings, labels, temperature: float):
    """Supervised contrastive loss (Khosla et al. 2020) of (b, d) unit ``embeddings`` with (b,) ``labels``:
    mean over anchors with a positive of -mean log-softmax similarity to their positives."""
    import torch

    sim = embeddings @ embeddings.T / temperature
    eye = torch.eye(len(labels), dtype=torch.bool, device=embeddings.device)
    sim = sim.masked_fill(eye, -1e9)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    per_anchor = -(log_prob * positive).sum(1) / positive.sum(1).clamp(min=1)
    has_positive = positive.any(1)
    if not bool(has_positive.any()):
        return embeddings.sum() * 0.0
    return per_anchor[has_positive].mean()


def _encode(model, texts: list[str], batch_size: int, set_batch=lambda texts: None):
    """Normalised embeddings of ``texts`` by a (possibly training) SentenceTransformer, as a torch tensor;
    ``set_batch(texts)`` is called before each batch (``frozen_bottom.top_layers_only``)."""
    import torch

    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(texts), batch_size):
        set_batch(texts[i:i + batch_size])
        feats = _tokenize(model, texts[i:i + batch_size], device)
        outs.append(torch.nn.functional.normalize(model(feats)["sentence_embedding"], dim=1))
    return torch.cat(outs)


def _tokenize(model, texts: list[str], device: Any = None) -> dict:
    """Model inputs for ``texts`` (``preprocess`` in newer sentence-transformers, ``tokenize`` before), as
    tensors on ``device`` (the model's: the tokenizer builds them on the CPU)."""
    fn = getattr(model, "preprocess", None) or model.tokenize
    feats = fn(texts)
    if device is None:
        return feats
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in feats.items()}
