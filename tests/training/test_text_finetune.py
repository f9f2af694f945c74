"""refine: the 'auto' rule and the encoder fine-tune (a tiny run: a few steps on a handful of texts)."""
import numpy as np
import pytest

from fewshot.encoders import load_encoder
from fewshot.engine.lifecycle import choose_method
from fewshot.errors import InvalidInputError
from fewshot.training.text_finetune import finetune_encoder

TEXTS = ["I lost my card", "my card is gone", "where is my card", "card missing since yesterday",
         "what is my balance", "how much money do I have", "show my account balance", "balance please"]
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_choose_method_rule():
    assert choose_method([0, 0, 0]) == "zero-shot"
    assert choose_method([1, 0, 0]) == "linear"       # most classes described only: median 0
    assert choose_method([1, 1, 0]) == "encoder"      # from one labelled example per class (median 1)
    assert choose_method([2, 3, 2]) == "encoder"
    assert choose_method([1, 1, 0], can_tune_encoder=False) == "linear"
    assert choose_method([5]) == "linear"             # one class: nothing for a fine-tune to separate
    assert choose_method([5, 10, 8]) == "encoder"
    assert choose_method([5, 10, 8], can_tune_encoder=False) == "linear"  # image, CLIP, ONNX engines
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


def test_supervised_contrastive_loss_matches_the_formula_and_prefers_tight_classes():
    import torch

    from fewshot.training.text_finetune import supervised_contrastive_loss

    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=1)
    y = torch.tensor([0, 0, 1, 1, 2, 3])  # classes 2 and 3 have no positive: not anchors
    tau = 0.5
    sim = (z @ z.T / tau).numpy()
    expected = []
    for i in range(4):
        others = [j for j in range(6) if j != i]
        log_den = np.log(np.exp(sim[i, others]).sum())
        pos = [j for j in others if y[j] == y[i]]
        expected.append(-np.mean([sim[i, j] - log_den for j in pos]))
    got = float(supervised_contrastive_loss(z, y, tau))
    assert got == pytest.approx(float(np.mean(expected)), rel=1e-5)
    # same-class pairs made identical and classes orthogonal → a lower loss than random embeddings
    tight = torch.nn.functional.normalize(torch.eye(8)[[0, 0, 1, 1, 2, 3]], dim=1)
    assert float(supervised_contrastive_loss(tight, y, tau)) < got
    # no positive pair at all: a zero loss that still has a gradient path
    single = supervised_contrastive_loss(z[:3].clone().requires_grad_(True), torch.tensor([0, 1, 2]), tau)
    assert float(single.detach()) == 0.0 and single.requires_grad


def test_pk_batches_cover_every_paired_example_once():
    from fewshot.training.text_finetune import _pk_batches

    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 9, 10, 11])
    batches = _pk_batches(labels, 4, np.random.default_rng(0))
    seen = np.concatenate(batches)
    assert len(seen) == len(set(seen.tolist()))  # each example at most once
    assert set(seen.tolist()) == set(np.flatnonzero(labels != 0).tolist())  # the singleton class cannot pair
    for b in batches[:-1]:  # the last batch also takes what one class has left over
        classes, counts = np.unique(labels[b], return_counts=True)
        assert len(classes) <= 4 and (counts >= 2).all() and (counts <= 4).all()
    assert (np.unique(labels[batches[-1]], return_counts=True)[1] >= 2).all()


def test_cross_entropy_variant_and_trained_texts(tmp_path):
    res = finetune_encoder(TEXTS, LABELS, class_names=["lost card", "account balance"], loss="cross-entropy",
                           max_epochs=1, patience=1, batch_size=8, train_layers=1, refit=False,
                           output_dir=tmp_path, show_progress_bar=False)
    assert res.history[0]["epoch"] == 0 and 0 <= res.epochs <= 1
    if res.epochs == 0:  # the base encoder is kept: nothing was seen
        assert res.trained_texts == frozenset() and res.selection_texts == frozenset()
    else:  # without refit the held-out part (1 per class here) is not trained on; it picked the epochs
        assert len(res.trained_texts) == len(TEXTS) - 2 and res.trained_texts < set(TEXTS)
        assert len(res.selection_texts) == 2 and not res.selection_texts & res.trained_texts
        assert {LABELS[TEXTS.index(t)] for t in res.selection_texts} == {0, 1}
    with pytest.raises(ValueError, match="loss"):
        finetune_encoder(TEXTS, LABELS, loss="triplet", show_progress_bar=False)
    with pytest.raises(ValueError, match="temperature"):
        finetune_encoder(TEXTS, LABELS, temperature=0, show_progress_bar=False)
    with pytest.raises(ValueError, match="two or more"):  # singletons without names: no pair to contrast
        finetune_encoder(TEXTS[:1] + TEXTS[4:5], np.array([0, 1]), show_progress_bar=False)


def test_without_output_dir_the_tuned_model_stays_in_memory(minilm, tmp_path, monkeypatch):
    """No temporary folder per fine-tune (each held a ~90 MB model copy); the engine writes it when saved."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    idx = [0, 1, 4, 5]
    res = finetune_encoder([TEXTS[i] for i in idx], LABELS[idx], class_names=["lost card", "account balance"],
                           default_epochs=1, batch_size=4, train_layers=1, show_progress_bar=False)
    assert res.directory is None and "+tuned-" in res.encoder.name
    assert list(tmp_path.iterdir()) == []
    assert res.encoder.encode_text(["lost card"]).shape == (1, 384)
    res.encoder.save_to(tmp_path / "saved")
    reloaded = load_encoder(f"st:{tmp_path / 'saved'}", cache=False)
    np.testing.assert_allclose(reloaded.encode(TEXTS), res.encoder.encode(TEXTS), atol=1e-6)


def test_class_texts_can_be_several_prompts_per_class(minilm):
    res = finetune_encoder(TEXTS[:2] + TEXTS[4:6], LABELS[[0, 1, 4, 5]],
                           class_names=[["lost card", "This is about lost card."], ["account balance"]],
                           default_epochs=1, batch_size=4, train_layers=1, show_progress_bar=False)
    assert res.epochs == 1
    with pytest.raises(InvalidInputError):
        finetune_encoder(TEXTS[:2], LABELS[:2], class_names=[[], ["x"]], show_progress_bar=False)
    with pytest.raises(InvalidInputError, match="unknown fine-tune setting"):
        finetune_encoder(TEXTS[:2], LABELS[:2], bogus=1)


def test_model_inputs_are_built_on_the_models_device():
    """The tokenizer makes CPU tensors; a model on a GPU needs them (and the labels and head) on its device.
    No GPU here: torch's "meta" device stands in for one."""
    import torch

    from fewshot.training.text_finetune import _tokenize

    class Tokenizing:
        def tokenize(self, texts):
            return {"input_ids": torch.ones(len(texts), 3, dtype=torch.long), "text": list(texts)}

    feats = _tokenize(Tokenizing(), ["a", "b"], torch.device("meta"))
    assert feats["input_ids"].device.type == "meta" and feats["text"] == ["a", "b"]
    assert _tokenize(Tokenizing(), ["a"])["input_ids"].device.type == "cpu"


def test_interpolate_returns_the_weights_between_base_and_tuned(minilm):
    """WiSE-FT: ``interpolate=a`` gives a · tuned + (1 − a) · base, tensor by tensor (same seed, same training)."""
    idx = [0, 1, 4, 5]
    kw = dict(class_names=["lost card", "account balance"], default_epochs=1, batch_size=4, lr=1e-3,
              train_layers=1, seed=0, show_progress_bar=False)
    full = finetune_encoder([TEXTS[i] for i in idx], LABELS[idx], **kw).encoder.model.state_dict()
    half = finetune_encoder([TEXTS[i] for i in idx], LABELS[idx], interpolate=0.5, **kw).encoder.model.state_dict()
    base = minilm.model.state_dict()
    moved = [k for k, v in base.items() if v.is_floating_point() and not np.allclose(full[k], v, atol=1e-7)]
    assert moved  # training changed some tensors
    for k in moved:
        np.testing.assert_allclose(half[k].numpy(), 0.5 * full[k].numpy() + 0.5 * base[k].numpy(), atol=1e-6)
    for bad in (0.0, 1.5, "x"):
        with pytest.raises(InvalidInputError, match="interpolate"):
            finetune_encoder(TEXTS[:2], LABELS[:2], interpolate=bad)
