"""A quick-loading inference path for sentence-transformers folders that hold a plain BERT with mean or CLS
pooling (all-MiniLM-L6-v2 — the default 'minilm' — and what fewshot's encoder fine-tune saves from it).

Importing sentence-transformers (with transformers' model code, scikit-learn, pandas, datasets...) is most of a
torch CLI call's start-up; for these folders the same embeddings come from torch alone: the weights are read with
``safetensors``, the texts tokenised with ``tokenizers`` from the folder's ``tokenizer.json``, and the BERT
forward pass (post-layer-norm encoder, GELU, absolute positions) runs in ``torch.nn.functional``. It agrees with
``SentenceTransformer.encode`` to float32 rounding (tests/encoders/test_bert.py compares them on real text).

``read_spec(folder)`` accepts a folder only when every part of it is understood (modules, pooling, model
config, tokenizer, float32 weights); anything else returns None and the caller loads sentence-transformers.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fewshot._core import default_threads, l2_normalise, torch_threads
from fewshot._progress import progress

#: the sentence-transformers module classes (any package path) a quick-loading folder may list, in order
_MODULES = ("Transformer", "Pooling", "Normalize")
#: sentence_bert_config.json keys understood, with the values that keep the plain feature-extraction path
_TRANSFORMER_KEYS = {"max_seq_length", "do_lower_case", "transformer_task", "modality_config", "module_output_name"}
_PLAIN_TEXT_MODALITY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}


@dataclass(frozen=True)
class BertSpec:
    """What the quick path needs from a folder: sizes from ``config.json``, the pooling, the truncation."""

    folder: Path
    hidden: int
    layers: int
    heads: int
    eps: float
    pooling: str           # "mean" | "cls"
    max_seq_length: int
    pad_id: int


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _pooling_mode(cfg: Any) -> str | None:
    """'mean' / 'cls' from a Pooling config (old boolean flags or the newer ``pooling_mode``), else None."""
    if not isinstance(cfg, dict):
        return None
    if "pooling_mode" in cfg:
        mode = cfg.get("pooling_mode")
        return mode if mode in ("mean", "cls") else None
    flags = {k: bool(v) for k, v in cfg.items() if k.startswith("pooling_mode_")}
    on = [k for k, v in flags.items() if v]
    return {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(on[0]) if len(on) == 1 else None


def read_spec(folder: str | os.PathLike) -> BertSpec | None:
    """The quick-path description of a sentence-transformers folder, or None when any part of it is not a plain
    BERT + mean/CLS pooling (+ normalisation) model with ``model.safetensors`` and ``tokenizer.json``."""
    root = Path(folder)
    modules = _json(root / "modules.json")
    if not isinstance(modules, list) or not 2 <= len(modules) <= 3:
        return None
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] if isinstance(m, dict) else "" for m in modules]
    if kinds != list(_MODULES[:len(kinds)]) or modules[0].get("path", "") != "":
        return None
    pooling = _pooling_mode(_json(root / str(modules[1].get("path", "")) / "config.json"))
    st_cfg = _json(root / "sentence_bert_config.json") or {}
    if not isinstance(st_cfg, dict) or set(st_cfg) - _TRANSFORMER_KEYS or st_cfg.get("do_lower_case") or \
            st_cfg.get("transformer_task", "feature-extraction") != "feature-extraction" or \
            st_cfg.get("modality_config", _PLAIN_TEXT_MODALITY) != _PLAIN_TEXT_MODALITY or \
            st_cfg.get("module_output_name", "token_embeddings") != "token_embeddings":
        return None
    prompts = _json(root / "config_sentence_transformers.json") or {}
    if not isinstance(prompts, dict) or prompts.get("default_prompt_name"):
        return None
    cfg = _json(root / "config.json")
    if not isinstance(cfg, dict) or cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu" or \
            cfg.get("position_embedding_type", "absolute") != "absolute" or cfg.get("is_decoder") or \
            cfg.get("add_cross_attention") or cfg.get("architectures", ["BertModel"]) != ["BertModel"]:
        return None
    tok_cfg = _json(root / "tokenizer_config.json") or {}
    max_len = st_cfg.get("max_seq_length") or (tok_cfg.get("model_max_length") if isinstance(tok_cfg, dict) else None)
    if pooling is None or not isinstance(max_len, int) or not (root / "model.safetensors").is_file() or \
            not (root / "tokenizer.json").is_file():
        return None
    try:
        hidden, layers, heads = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
        max_len = min(max_len, int(cfg.get("max_position_embeddings", max_len)))
        return BertSpec(root, hidden, layers, heads, float(cfg.get("layer_norm_eps", 1e-12)), pooling, max_len,
                        int(cfg.get("pad_token_id") or 0))
    except (KeyError, TypeError, ValueError):
        return None


class QuickBert:
    """The BERT of a ``BertSpec`` folder on torch: ``encode(texts)`` → (n, hidden) float32, L2-normalised,
    as ``SentenceTransformer.encode(..., normalize_embeddings=True)`` computes it."""

    def __init__(self, spec: BertSpec, device: str = "cpu", max_seq_length: int | None = None):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.spec, self.device = spec, device
        self.max_seq_length = int(max_seq_length or spec.max_seq_length)
        weights = load_file(str(spec.folder / "model.safetensors"), device="cpu")
        prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
        self.w: dict[str, Any] = {}
        for key, value in weights.items():
            if not key.startswith(prefix) or value.dtype != torch.float32:
                if key.startswith(prefix) and value.is_floating_point():
                    raise ValueError(f"{key} is {value.dtype}; the quick path reads float32 weights only")
                continue
            self.w[key[len(prefix):]] = value.to(device)
        for name in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                     f"encoder.layer.{spec.layers - 1}.output.LayerNorm.weight"):
            if name not in self.w:
                raise ValueError(f"{spec.folder / 'model.safetensors'} has no tensor {name}")
        self.tokenizer = Tokenizer.from_file(str(spec.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def _layer_norm(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F
        return F.layer_norm(x, (x.shape[-1],), self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.spec.eps)

    def _linear(self, x: Any, name: str) -> Any:
        import torch.nn.functional as F
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def forward(self, ids: Any, mask: Any) -> Any:
        """(b, L) token ids and 0/1 mask → (b, hidden) pooled sentence vectors (not yet normalised)."""
        import torch
        import torch.nn.functional as F

        b, length = ids.shape
        heads, w = self.spec.heads, self.w
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
        x = self._layer_norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        keep = mask.bool()[:, None, None, :]  # (b, 1, 1, L): attend to real tokens only
        for i in range(self.spec.layers):
            p = f"encoder.layer.{i}"

            def split(t: Any) -> Any:
                return t.view(b, length, heads, -1).transpose(1, 2)

            q, k, v = (split(self._linear(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(b, length, -1)
            attended = self._linear(ctx, f"{p}.attention.output.dense")
            x = self._layer_norm(attended + x, f"{p}.attention.output.LayerNorm")
            inner = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._layer_norm(self._linear(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        if self.spec.pooling == "cls":
            return x[:, 0]
        m = mask.to(x.dtype).unsqueeze(-1)
        return (x * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool | None = None) -> np.ndarray:
        """Texts (stripped, as sentence-transformers does) → (n, hidden) float32, L2-normalised. Tokenised once,
        longest first, so each batch pads only to its own longest text."""
        import torch

        ids = [e.ids for e in self.tokenizer.encode_batch([t.strip() for t in texts])]
        order = np.argsort([-len(row) for row in ids], kind="stable")
        out = np.empty((len(texts), self.spec.hidden), np.float32)
        # one thread on a CPU already busier than its cores (fewshot._core.default_threads: oversubscribed threads
        # measured several times slower), else torch's own count
        threads = 1 if str(self.device).startswith("cpu") and default_threads() == 1 else None
        with torch.inference_mode(), torch_threads(threads):
            for start in progress(range(0, len(texts), batch_size), show=show_progress_bar,
                                  total=math.ceil(len(texts) / batch_size), desc="encoding texts"):
                idx = order[start:start + batch_size]
                width = max(len(ids[i]) for i in idx)
                batch = np.full((len(idx), width), self.spec.pad_id, np.int64)
                mask = np.zeros((len(idx), width), np.int64)
                for row, i in enumerate(idx):
                    batch[row, :len(ids[i])], mask[row, :len(ids[i])] = ids[i], 1
                pooled = self.forward(torch.from_numpy(batch).to(self.device), torch.from_numpy(mask).to(self.device))
                out[idx] = pooled.float().cpu().numpy()
        return l2_normalise(out)
