"""open_clip support on a tiny randomly initialised architecture, saved and reloaded from a local checkpoint."""
import json

import numpy as np
import pytest
from PIL import Image

from fewshot import FewShotEngine
from fewshot.encoders.clip import OpenClipEncoder, parse_clip_spec

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import open_clip
    import torch

    cfg_dir = tmp_path_factory.mktemp("cfg")
    (cfg_dir / "fewshot-tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("fewshot-tiny-clip", pretrained=None)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def test_parse_spec():
    assert parse_clip_spec("ViT-B-32/openai") == ("ViT-B-32", "openai")
    assert parse_clip_spec("ViT-B-32//abs/path.pt") == ("ViT-B-32", "/abs/path.pt")
    assert parse_clip_spec("hf-hub:org/repo") == ("hf-hub:org/repo", None)


def test_checkpoint_roundtrip_and_shared_space(tiny_checkpoint, tmp_path):
    enc = OpenClipEncoder(f"fewshot-tiny-clip/{tiny_checkpoint}")
    again = OpenClipEncoder(f"fewshot-tiny-clip/{tiny_checkpoint}")
    assert enc.dim == 32 and enc.modalities == {"text", "image"}
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(2)]
    vi, vt = enc.encode_images(images), enc.encode_text(["a photo of a cat", "a dog"])
    assert vi.shape == (2, 32) and vt.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vi, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(again.encode_images(images), vi, atol=1e-5)
    np.testing.assert_allclose(again.encode_text(["a dog"]), vt[1:], atol=1e-5)
    # the model's own eval transform, not a default: resize to the model's 32 px and its normalisation
    assert "32" in repr(enc.preprocess) and "Normalize" in repr(enc.preprocess)
    assert len(enc.zero_shot_templates) == 80


def test_engine_with_clip_descriptions_and_image_examples(tiny_checkpoint, tmp_path):
    enc = OpenClipEncoder(f"fewshot-tiny-clip/{tiny_checkpoint}")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    eng = FewShotEngine(encoder=enc)
    eng.add_class("noise", examples=paths[:2], description="random noise")
    eng.add_class("cat", description="a cat")
    preds = eng.predict(paths[2:], top_k=2)
    assert len(preds) == 2 and {p.label for p in preds} <= {"noise", "cat"}
    eng.save(tmp_path / "eng")
    reloaded = FewShotEngine.load(tmp_path / "eng")
    np.testing.assert_allclose(reloaded.predict_proba(paths[2:]), eng.predict_proba(paths[2:]), atol=1e-5)
