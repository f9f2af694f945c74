"""fewshot.training.image_transfer: a tiny adaptation (8 Omniglot background classes, 32 px, 1 epoch) and the timm-dir round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fewshot.cli import main as cli_main
from fewshot.datasets import LabelledData
from fewshot.encoders.base import Encoder
from fewshot.encoders.timm_image import AdaptedTimmEncoder, TimmImageEncoder, load_timm_dir
from fewshot.errors import EncoderUnavailableError, InvalidInputError
from fewshot.training.image_transfer import DEFAULTS, transfer_encoder


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """One torch thread on a busy machine (2 oversubscribed threads run 3-5x slower here); restored after."""
    import torch

    from fewshot._core import default_threads
    saved = torch.get_num_threads()
    torch.set_num_threads(default_threads())
    yield
    torch.set_num_threads(saved)


def _omniglot_slice(path, n_classes: int, offset: int) -> LabelledData:
    """The first n_classes of an Omniglot .npz as uint8 arrays (load_omniglot's format, without decoding all)."""
    with np.load(path, allow_pickle=False) as z:
        images = z["images"][:n_classes]
    pixels = np.where(images, np.uint8(255), np.uint8(0)).reshape(-1, 105, 105)
    labels = [f"char{offset + c:04d}" for c in range(n_classes) for _ in range(20)]
    return LabelledData(list(pixels), labels, f"{path}[:{n_classes}]", "image")


@pytest.fixture(scope="module")
def background(shared_data):
    return _omniglot_slice(shared_data / "images" / "omniglot" / "images_background.npz", 8, 1)  # 8 classes × 20


@pytest.fixture(scope="module")
def evaluation(shared_data):
    d = _omniglot_slice(shared_data / "images" / "omniglot" / "images_evaluation.npz", 3, 965)  # 3 new classes
    return d.inputs, d.labels


@pytest.fixture(scope="module")
def adapted(effnet, background):
    history: list = []
    enc = transfer_encoder(effnet, background, image_size=32, epochs=1, batch_size=32, holdout_classes=0,
                        lr=3e-3, progress=False, history=history)
    assert len(history) == 1 and history[0]["epoch"] == 1
    return enc


def test_adaptation_changes_features_not_the_base(effnet, adapted, evaluation):
    arrays = evaluation[0][:4]
    images = [Image.fromarray(a) for a in arrays]                          # plain timm encoders take PIL/paths
    assert isinstance(adapted, AdaptedTimmEncoder) and adapted.dim == effnet.dim == 1280
    assert adapted.preprocess_config["input_size"] == 32
    frozen = TimmImageEncoder(effnet.model, "frozen@32", adapted.preprocess_config, device="cpu")
    before = effnet.encode(images)
    a, f = adapted.encode(arrays), frozen.encode(images)
    assert a.shape == (4, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert not np.allclose(a, f, atol=1e-3)
    np.testing.assert_array_equal(effnet.encode(images), before)            # the base encoder is a copy, untouched
    assert adapted.info["train_blocks"] == DEFAULTS["train_blocks"] and adapted.info["steps"] >= 1
    assert adapted.name.startswith("adapted:effnet-lite0@")
    assert getattr(effnet, "save_to", None) is None                        # plain encoders keep saving their name


def test_arrays_and_pil_embed_alike(adapted, evaluation):
    arrays = evaluation[0][:3]
    np.testing.assert_allclose(adapted.encode(arrays), adapted.encode([Image.fromarray(a) for a in arrays]),
                               atol=1e-6)


def test_save_and_reload_timm_dir(adapted, evaluation, tmp_path):
    from fewshot.encoders import load_encoder

    name = adapted.save_to(tmp_path / "enc")
    assert name == "timm-dir:enc"
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["encoder.json", "model.safetensors"]
    meta = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert meta["arch"] == "tf_efficientnet_lite0" and meta["dim"] == 1280
    ref = adapted.encode(evaluation[0][:5])
    again = load_timm_dir(tmp_path / "enc")
    np.testing.assert_array_equal(again.encode(evaluation[0][:5]), ref)
    via_registry = load_encoder(f"timm-dir:{tmp_path / 'enc'}", cache=False)
    np.testing.assert_array_equal(via_registry.encode(evaluation[0][:5]), ref)
    assert via_registry.info["image_size"] == 32


def test_engine_save_load_with_adapted_encoder(adapted, evaluation, tmp_path):
    from fewshot import FewShotEngine

    inputs, labels = evaluation
    eng = FewShotEngine(encoder=adapted)
    classes = sorted(set(labels))
    for i, c in enumerate(classes):
        rows = [j for j, lab in enumerate(labels) if lab == c]
        shots = [inputs[j] for j in rows[:2]]
        eng.add_class(c, examples=shots if i % 2 == 0 else [Image.fromarray(s) for s in shots])
    queries = [inputs[j] for j in range(len(labels)) if j % 20 >= 2]
    preds = eng.predict(queries)
    proba = eng.predict_proba(queries)
    eng.save(tmp_path / "engine")
    loaded = FewShotEngine.load(tmp_path / "engine")
    assert isinstance(loaded.encoder, AdaptedTimmEncoder)
    assert [p.label for p in loaded.predict(queries)] == [p.label for p in preds]
    np.testing.assert_allclose(loaded.predict_proba(queries), proba, atol=1e-6)
    truth = [labels[j] for j in range(len(labels)) if j % 20 >= 2]
    assert np.mean([p.label == t for p, t in zip(preds, truth)]) > 1 / 3      # better than chance


class _TextOnly(Encoder):
    name, dim, modalities = "text-only", 4, frozenset({"text"})


def test_bad_arguments_are_typed(effnet, background):
    small = LabelledData(background.inputs[:40], background.labels[:40], "two classes", "image")
    bad = [dict(loss="triplet"), dict(epochs=0), dict(image_size=8), dict(train_blocks=0), dict(lr=-1.0),
           dict(batch_size=1), dict(max_minutes=0), dict(epochs=1.5), dict(holdout_classes=-1), dict(train_blocks=99)]
    for kwargs in bad:
        with pytest.raises(InvalidInputError):
            transfer_encoder(effnet, small, progress=False, **kwargs)
    with pytest.raises(InvalidInputError):
        transfer_encoder(effnet, [np.zeros((5, 5))], progress=False)
    with pytest.raises(InvalidInputError):
        transfer_encoder(effnet, LabelledData(["a", "b"], ["x", "y"], "text", "text"), progress=False)
    with pytest.raises(InvalidInputError):                                   # one image per class
        transfer_encoder(effnet, LabelledData(background.inputs[:2], ["x", "y"], "tiny", "image"), progress=False)
    with pytest.raises(EncoderUnavailableError):
        transfer_encoder(_TextOnly(), small, progress=False)
    with pytest.raises(InvalidInputError):
        transfer_encoder(42, small, progress=False)


def test_load_timm_dir_errors(tmp_path, adapted):
    with pytest.raises(EncoderUnavailableError):
        load_timm_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderUnavailableError):
        load_timm_dir(tmp_path / "empty")
    adapted.save_to(tmp_path / "bad")
    (tmp_path / "bad" / "encoder.json").write_text("{not json")
    with pytest.raises(EncoderUnavailableError):
        load_timm_dir(tmp_path / "bad")
    adapted.save_to(tmp_path / "arch")
    meta = json.loads((tmp_path / "arch" / "encoder.json").read_text())
    meta["arch"] = "resnet18"
    (tmp_path / "arch" / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(EncoderUnavailableError):
        load_timm_dir(tmp_path / "arch")


def test_cli_adapt_on_an_image_folder(tmp_path, background, capsys):
    root = tmp_path / "source"
    for c in range(3):
        (root / f"c{c}").mkdir(parents=True)
        for k in range(3):
            Image.fromarray(background.inputs[c * 20 + k]).save(root / f"c{c}" / f"{k}.png")
    assert cli_main(["transfer", "--source", str(root), "--out", str(tmp_path / "out"), "--epochs", "1",
                     "--image-size", "32", "--batch-size", "4", "--holdout-classes", "0", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoder"].startswith("timm-dir:") and summary["source_classes"] == 3
    assert load_timm_dir(tmp_path / "out").dim == 1280


def test_episodic_loss_runs(effnet, background):
    history: list = []
    enc = transfer_encoder(effnet, background, loss="episodic", episode_way=4, episode_query=2, image_size=32,
                        epochs=1, holdout_classes=0, progress=False, history=history)
    assert enc.info["loss"] == "episodic" and enc.info["steps"] == len(background) // 12
    assert history[0]["loss"] is not None and np.isfinite(history[0]["loss"])
