"""Names resolve offline or fail fast with a typed error that says what would serve instead."""
import time

import pytest

from fewshot.encoders import list_encoders, load_encoder
from fewshot.errors import EncoderUnavailableError


@pytest.mark.parametrize("name, hint", [
    ("nope", "known"),
    ("", "non-empty"),
    ("clip:ViT-B-32", "clip:<arch>/<pretrained>"),
    ("clip:not-an-arch/none", "unknown open_clip architecture"),
    ("clip:ViT-B-32/openai", "local checkpoint"),
    ("clip:ViT-B-32/missing/dir/model.pt", "not found"),
    ("clip:hf-hub:someone/some-clip", "local checkpoint"),
    ("st:sentence-transformers/all-mpnet-base-v2", "local path"),
    ("timm:resnet18", "effnet-lite0"),
    ("timm:not_a_model", "unknown timm model"),
])
def test_unavailable_names_fail_fast(name, hint, monkeypatch):
    monkeypatch.delenv("FEWSHOT_ALLOW_DOWNLOAD", raising=False)
    start = time.monotonic()
    with pytest.raises(EncoderUnavailableError, match=hint.replace("<", ".").replace(">", ".")):
        load_encoder(name, cache=False)
    assert time.monotonic() - start < 60, "an unavailable encoder must fail fast, not retry the network"


def test_listing_and_cache(minilm):
    assert {"minilm", "effnet-lite0", "clip:...", "st:...", "timm:...", "onnx:..."} <= set(list_encoders())
    assert load_encoder("minilm") is minilm
