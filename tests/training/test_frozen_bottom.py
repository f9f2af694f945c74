"""frozen_bottom: training the top layers from cached bottom states is the full model's computation."""
import copy

import numpy as np
import pytest

from fewshot.training import frozen_bottom
from fewshot.training.frozen_bottom import BottomCache, top_layers_only
from fewshot.training.text_finetune import _tokenize, finetune_encoder
from tests.conftest import model_installed

TEXTS = ["I lost my card", "my card is gone", "where is my card", "card missing since yesterday",
         "what is my balance", "how much money do I have in all of my accounts together", "balance please"]
LABELS = np.array([0, 0, 0, 0, 1, 1, 1])


@pytest.fixture(scope="module")
def st_model(minilm):
    return copy.deepcopy(minilm.model).to("cpu").eval()


def _embed(model, texts, set_batch=lambda t: None):
    import torch

    with torch.no_grad():
        set_batch(texts)
        return model(_tokenize(model, texts))["sentence_embedding"].numpy()


@pytest.mark.parametrize("train_layers", [1, 2, 5])
def test_top_only_forward_equals_the_full_forward(st_model, train_layers):
    full = _embed(st_model, TEXTS)  # one padded batch of texts of different lengths
    cache = BottomCache.build(st_model, TEXTS, train_layers, _tokenize)
    assert cache is not None and set(cache.states) == set(TEXTS)
    keys = list(st_model.state_dict())
    with top_layers_only(st_model, cache) as set_batch:
        assert len(st_model[0].auto_model.encoder.layer) == train_layers
        cut = _embed(st_model, TEXTS, set_batch)
        odd_batch = _embed(st_model, TEXTS[3:5], set_batch)  # another padding length
    np.testing.assert_allclose(cut, full, atol=2e-5)
    np.testing.assert_allclose(odd_batch, full[3:5], atol=2e-5)
    assert list(st_model.state_dict()) == keys  # restored: every layer, the embeddings, no stub
    np.testing.assert_allclose(_embed(st_model, TEXTS), full, atol=1e-6)


def test_no_cache_when_every_layer_trains_or_too_big(st_model, monkeypatch):
    assert BottomCache.build(st_model, TEXTS, None, _tokenize) is None
    assert BottomCache.build(st_model, TEXTS, 6, _tokenize) is None   # MiniLM has 6 layers: nothing frozen
    monkeypatch.setattr(frozen_bottom, "MAX_CACHED_FLOATS", 10)
    assert BottomCache.build(st_model, TEXTS, 2, _tokenize) is None
    with top_layers_only(st_model, None) as set_batch:       # no cache: the full model, untouched
        np.testing.assert_allclose(_embed(st_model, TEXTS, set_batch), _embed(st_model, TEXTS), atol=1e-6)


def test_a_batch_the_cache_does_not_match_fails_loudly(st_model):
    cache = BottomCache.build(st_model, TEXTS, 2, _tokenize)
    with top_layers_only(st_model, cache) as set_batch, pytest.raises(RuntimeError, match="cached bottom"):
        set_batch(TEXTS[:2])
        _embed(st_model, TEXTS[:3])


def test_finetune_trains_only_the_top_layers_with_or_without_the_cache(minilm):
    kw = dict(class_names=["lost card", "account balance"], loss="cross-entropy", default_epochs=2, batch_size=4,
              lr=1e-3, train_layers=2, val_fraction=0.0, seed=0, show_progress_bar=False)
    before = {n: p.detach().clone() for n, p in minilm.model.named_parameters()}
    outs = {}
    for cached in (True, False):
        res = finetune_encoder(TEXTS, LABELS, cache_frozen_bottom=cached, **kw)
        after = dict(res.encoder.model.named_parameters())
        assert set(after) == set(before)
        changed = {n for n in before if not np.allclose(before[n].numpy(), after[n].detach().numpy())}
        assert changed and all(".layer.4." in n or ".layer.5." in n for n in changed), sorted(changed)[:3]
        outs[cached] = res.encoder.encode(TEXTS)
    # both train; they differ only by dropout in the frozen bottom (absent with the cache)
    assert np.isfinite(outs[True]).all() and outs[True].shape == outs[False].shape


def test_no_refit_keeps_the_best_epoch_weights_with_the_cache(minilm):
    """refit=False restores the best epoch's weights by parameter object: names change while the cache runs."""
    res = finetune_encoder(TEXTS * 2, np.concatenate([LABELS, LABELS]), class_names=["lost card", "balance"],
                           cache_frozen_bottom=True,
                           loss="cross-entropy", max_epochs=2, patience=1, batch_size=4, train_layers=2,
                           val_fraction=0.3, refit=False, seed=0, show_progress_bar=False)
    assert list(res.encoder.model.state_dict()) == list(minilm.model.state_dict())
    assert res.encoder.encode(TEXTS).shape == (len(TEXTS), 384)


@pytest.mark.skipif(not model_installed("mpnet"), reason="run `fewshot models install mpnet` (CI does)")
def test_mpnet_top_only_forward_equals_the_full_forward():
    """MPNet computes a relative position bias in its encoder: cutting the layer list keeps it."""
    from fewshot.encoders import load_encoder

    model = copy.deepcopy(load_encoder("mpnet").model).to("cpu").eval()
    full = _embed(model, TEXTS)
    cache = BottomCache.build(model, TEXTS, 2, _tokenize)
    with top_layers_only(model, cache) as set_batch:
        np.testing.assert_allclose(_embed(model, TEXTS[2:], set_batch), full[2:], atol=2e-5)
