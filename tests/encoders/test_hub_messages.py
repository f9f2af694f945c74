"""A hub name that is not cached locally fails fast and says how to allow the download."""
from __future__ import annotations

import pytest

from fewshot.encoders import load_encoder
from fewshot.errors import EncoderUnavailableError


@pytest.mark.parametrize("name", ["st:someone/some-model", "timm:resnet18", "clip:hf-hub:someone/some-clip"])
def test_hub_names_mention_the_download_switch(name, monkeypatch):
    monkeypatch.delenv("FEWSHOT_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(EncoderUnavailableError, match="FEWSHOT_ALLOW_DOWNLOAD=1") as info:
        load_encoder(name, cache=False)
    assert any(w in str(info.value) for w in ("minilm", "effnet-lite0", "local checkpoint"))  # and what serves
