"""Train only the top layers of a sentence-transformers model without running its frozen bottom every step.

When a fine-tune trains the last N transformer layers (``FinetuneConfig.train_layers``), the layers below never
change, so their output for a text is the same at every epoch. ``BottomCache`` runs the frozen bottom once per
distinct text (no dropout: the frozen layers are evaluated as at inference) and keeps its hidden states;
``top_layers_only(model, cache)`` then makes ``model(features)`` start from those states and run just the
trained layers, the pooling and whatever modules follow. With the model in eval mode the result equals the full
forward pass (tested). In training the frozen layers' own dropout is gone; the cached states get the model's
``hidden_dropout_prob`` once, where the last frozen layer would have applied it.

Measured (MiniLM, train_layers=2, 3 epochs, the carryover draws 0-2, quiet machine): Banking77 10-shot 86.08 vs
86.25 with the full model at 29-40 s vs 49-98 s per fit; CLINC150 5-shot 88.83 vs 88.90. A little less accurate,
so ``FinetuneConfig.cache_frozen_bottom`` is off by default: a speed option (e.g. for mpnet, ~4x MiniLM's cost).

It works through the Hugging Face model's own forward: its ``embeddings`` module is swapped for one that returns
the cached states of the batch and its ``encoder.layer`` list is cut to the top layers, so attention masks and
position handling stay the library's own. Models of another shape (no ``embeddings`` / ``encoder.layer``) are not
cached: ``BottomCache.build`` returns None and training runs the full model.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

#: above this many cached floats (4 bytes each: 256 MiB) the bottom is not cached; training runs the full model
MAX_CACHED_FLOATS = 64 * 1024 * 1024


def _hf_model(model: Any) -> Any | None:
    """The Hugging Face model inside a sentence-transformers model, if it has a cacheable shape."""
    first = model[0] if len(model) else None
    hf = getattr(first, "auto_model", None)
    layers = getattr(getattr(hf, "encoder", None), "layer", None)
    if hf is None or getattr(hf, "embeddings", None) is None or layers is None or not len(layers):
        return None
    return hf


class _CachedEmbeddings:
    """Stands in for the embeddings module: returns (B, T, d) cached bottom states of the current batch."""

    def __init__(self, dropout: float = 0.0) -> None:
        self.batch: list[Any] = []
        self.dropout = dropout
        self.training = False

    def __call__(self, input_ids: Any = None, inputs_embeds: Any = None, **_: Any) -> Any:
        import torch

        ref = input_ids if input_ids is not None else inputs_embeds
        B, T = int(ref.shape[0]), int(ref.shape[1])
        if len(self.batch) != B:
            raise RuntimeError(f"cached bottom states for {len(self.batch)} texts, batch of {B}")
        d = self.batch[0].shape[1]
        out = torch.zeros(B, T, d, dtype=self.batch[0].dtype, device=self.batch[0].device)
        for i, h in enumerate(self.batch):
            out[i, :h.shape[0]] = h
        return torch.nn.functional.dropout(out, self.dropout, training=self.training) if self.dropout else out


class BottomCache:
    """Hidden states after the frozen bottom (all but the last ``train_layers`` layers), per distinct text."""

    def __init__(self, states: dict[str, Any], train_layers: int) -> None:
        self.states = states
        self.train_layers = train_layers

    @classmethod
    def build(cls, model: Any, texts: Sequence[str], train_layers: int | None, tokenize: Any,
              batch_size: int = 64) -> BottomCache | None:
        """Run the bottom of ``model`` once over the distinct ``texts``; ``tokenize(model, texts)`` gives model
        inputs on the model's device. None when the model has no cacheable shape, when every layer is trained,
        or when the states would take more than ``MAX_CACHED_FLOATS``."""
        import torch

        hf = _hf_model(model)
        if hf is None or train_layers is None or train_layers >= len(hf.encoder.layer):
            return None
        cut = len(hf.encoder.layer) - train_layers          # hidden_states[cut]: the output of the frozen bottom
        distinct = list(dict.fromkeys(texts))
        states: dict[str, Any] = {}
        floats = 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for s in range(0, len(distinct), batch_size):
                    chunk = distinct[s:s + batch_size]
                    feats = tokenize(model, chunk)
                    mask = feats["attention_mask"]
                    args = {k: v for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                    hidden = hf(**args, output_hidden_states=True).hidden_states[cut]
                    for i, text in enumerate(chunk):
                        n = int(mask[i].sum())
                        states[text] = hidden[i, :n].clone()
                        floats += n * hidden.shape[2]
                    if floats > MAX_CACHED_FLOATS:
                        return None
        finally:
            model.train(was_training)
        return cls(states, train_layers)


@contextlib.contextmanager
def top_layers_only(model: Any, cache: BottomCache | None) -> Iterator[Any]:
    """Within the block, ``set_batch(texts)`` then ``model(tokenize(texts))`` runs only the top
    ``cache.train_layers`` layers from the cached states; yields ``set_batch`` (a no-op when ``cache`` is None,
    so that the full model runs). The model is restored on exit, its trained layers kept."""
    if cache is None:
        yield lambda texts: None
        return
    import torch

    hf = _hf_model(model)
    assert hf is not None  # a cache was built for this shape
    # the output dropout the skipped top of the frozen block would have applied in training (0.1 for MiniLM)
    stub = _CachedEmbeddings(float(getattr(hf.config, "hidden_dropout_prob", 0.0) or 0.0))
    full_layers, embeddings, order = hf.encoder.layer, hf.embeddings, list(hf._modules)
    hf.encoder.layer = torch.nn.ModuleList(list(full_layers)[-cache.train_layers:])
    # not a registered submodule: the stub holds no parameters and must not enter state_dict()
    object.__setattr__(hf, "embeddings", stub)
    hf._modules.pop("embeddings")

    def set_batch(texts: Sequence[str]) -> None:
        stub.batch = [cache.states[t] for t in texts]
        stub.training = model.training
    try:
        yield set_batch
    finally:
        object.__delattr__(hf, "embeddings")
        hf._modules["embeddings"] = embeddings
        for name in order:  # the original order: state_dict() keys come out as before
            hf._modules[name] = hf._modules.pop(name)
        hf.encoder.layer = full_layers
