"""refine: the 'auto' rule and the encoder fine-tune (a tiny run: a few steps on a handful of texts)."""
import numpy as np
import pytest

from fewshot.encoders import load_encoder
from fewshot.refine import choose_method, finetune_encoder

TEXTS = ["I lost my card", "my card is gone", "where is my card", "card missing since yesterday",
         "what is my balance", "how much money do I have", "show my account balance", "balance please"]
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_choose_method_rule():
    assert choose_method([0, 0, 0]) == "zero-shot"
    assert choose_method([1, 1, 0]) == "fusion"
    assert choose_method([2, 3, 2]) == "linear"
    assert choose_method([5, 10, 8]) == "encoder"
    with pytest.raises(ValueError):
        choose_method([])
    with pytest.raises(ValueError):
        choose_method([-1, 2])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Two classes of 2 examples: nothing can be held out, so ``default_epochs`` are trained."""
    out = tmp_path_factory.mktemp("enc")
    idx = [0, 1, 4, 5]
    kw = dict(class_names=["lost card", "account balance"], default_epochs=2, batch_size=4, lr=1e-4,
              train_layers=1, seed=0, show_progress_bar=False)
    a = finetune_encoder([TEXTS[i] for i in idx], LABELS[idx], output_dir=out / "a", **kw)
    b = finetune_encoder([TEXTS[i] for i in idx], LABELS[idx], output_dir=out / "b", **kw)
    return a, b


def test_finetune_changes_encoder_and_is_deterministic(tuned, minilm):
    a, b = tuned
    ea, eb = a.encoder.encode(TEXTS), b.encoder.encode(TEXTS)
    assert ea.shape == (len(TEXTS), 384) and ea.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(ea, eb, atol=1e-6)  # same seed → same weights
    assert not np.allclose(ea, minilm.encode(TEXTS), atol=1e-4)  # it did train
    assert a.epochs == 2 and len(a.history) == 2
    assert a.encoder.name == f"st:{a.directory}"


def test_save_reload_identical(tuned):
    a, _ = tuned
    reloaded = load_encoder(f"st:{a.directory}", cache=False)
    np.testing.assert_allclose(reloaded.encode(TEXTS), a.encoder.encode(TEXTS), atol=1e-6)


def test_early_stopping_on_held_out_support(tmp_path, minilm):
    res = finetune_encoder(TEXTS, LABELS, class_names=["lost card", "account balance"], max_epochs=1, patience=1,
                           batch_size=8, train_layers=1, refit=False, output_dir=tmp_path, show_progress_bar=False)
    assert res.history[0]["epoch"] == 0 and "val_accuracy" in res.history[0]  # the frozen baseline
    assert 0 <= res.epochs <= 1
    if res.epochs == 0:  # fine-tuning did not beat the frozen encoder: the base model is kept unchanged
        np.testing.assert_allclose(res.encoder.encode(TEXTS), minilm.encode(TEXTS), atol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError):
        finetune_encoder(TEXTS, LABELS[:3], show_progress_bar=False)
    with pytest.raises(ValueError, match="class_names"):
        finetune_encoder(TEXTS[:4], np.array([0, 0, 2, 2]), show_progress_bar=False)
