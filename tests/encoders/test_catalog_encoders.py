"""Encoders served by the model catalog: a missing one names the install command; installed ones load by name."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fewshot.encoders import load_encoder
from fewshot.encoders.catalog import model_path
from fewshot.errors import EncoderUnavailableError
from tests.conftest import model_installed


@pytest.mark.parametrize("name", ["mpnet", "effnet-lite1", "effnet-lite2"])
def test_a_missing_model_names_the_install_command(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_MODELS_DIR", str(tmp_path / "empty"))
    with pytest.raises(EncoderUnavailableError, match=f"fewshot models install {name}"):
        load_encoder(name, cache=False)


@pytest.mark.slow
@pytest.mark.skipif(not model_installed("mpnet"), reason="run `fewshot models install mpnet` (CI does)")
def test_mpnet_embeds_768_d_unit_vectors_that_rank_paraphrases_first():
    enc = load_encoder("mpnet")
    v = enc.encode_text(["I lost my card", "my card is gone", "what is the euro exchange rate"])
    assert v.shape == (3, 768) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > 0.7 > v[0] @ v[2]


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("effnet-lite1", 240), ("effnet-lite2", 260)])
def test_effnet_lite_variants_load_by_name_and_by_checkpoint_path(name, size):
    if not model_installed(name):
        pytest.skip(f"run `fewshot models install {name}` (CI does)")
    from fewshot.encoders.catalog import get_spec

    enc = load_encoder(name)
    assert enc.dim == 1280 and enc.preprocess_config["input_size"] == size
    images = [Image.new("RGB", (300, 280), c) for c in ((120, 30, 200), (10, 200, 40))]
    by_name = enc.encode_images(images)
    info = get_spec(name).info
    by_path = load_encoder(f"timm:{info['architecture']}@{model_path(name) / info['weights']}").encode_images(images)
    np.testing.assert_allclose((by_name * by_path).sum(1), 1.0, atol=1e-5)  # same weights, mapped by position
