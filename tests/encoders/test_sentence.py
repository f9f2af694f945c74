import numpy as np
import pytest

from fewshot.encoders.sentence import load_st, minilm_path
from fewshot.errors import EmptyInputError, InvalidInputError


def test_minilm_embeds_normalised_float32(minilm):
    v = minilm.encode_text(["I lost my card", "what is the exchange rate", ""])
    assert v.shape == (3, 384) and v.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] < 0.9
    np.testing.assert_allclose(minilm.encode(["I lost my card"]), v[:1], atol=1e-5)


def test_batching_does_not_change_vectors(minilm):
    texts = [f"sentence number {i} about cards" for i in range(10)]
    np.testing.assert_allclose(minilm.encode_text(texts, batch_size=3), minilm.encode_text(texts, batch_size=64),
                               atol=1e-5)


def test_st_prefix_loads_a_local_directory(minilm):
    enc = load_st(minilm_path())
    assert enc.name.startswith("st:") and enc.dim == 384
    np.testing.assert_allclose(enc.encode_text(["hello"]), minilm.encode_text(["hello"]), atol=1e-6)


def test_bad_text_input(minilm):
    with pytest.raises(EmptyInputError):
        minilm.encode_text([])
    with pytest.raises(InvalidInputError):
        minilm.encode_text("not a list")
    with pytest.raises(InvalidInputError):
        minilm.encode_text(["ok", None])
    with pytest.raises(InvalidInputError):
        minilm.encode_images(["x.png"])
