"""Shared fixtures: encoders are loaded once per session; real data comes from ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FakeImageEncoder, FakeTextEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEWSHOT_SHARED_DATA", REPO.parent / "shared" / "data"))


def model_installed(name: str) -> bool:
    """Whether the catalog model ``name`` is installed and verified (``fewshot models install NAME``; CI does)."""
    from fewshot.encoders.catalog import model_path
    from fewshot.errors import EncoderUnavailableError

    try:
        model_path(name)
    except EncoderUnavailableError:
        return False
    return True


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set FEWSHOT_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm():
    from fewshot.encoders import load_encoder
    return load_encoder("minilm")


@pytest.fixture(scope="session")
def effnet():
    from fewshot.encoders import load_encoder
    return load_encoder("effnet-lite0")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def fake_text_encoder() -> FakeTextEncoder:
    """A 16-d hash encoder for texts (``tests.fakes.FakeTextEncoder``)."""
    return FakeTextEncoder()


@pytest.fixture
def fake_image_encoder() -> FakeImageEncoder:
    """A 16-d mean-colour encoder for images (``tests.fakes.FakeImageEncoder``)."""
    return FakeImageEncoder()


#: fixtures that load a real model or read ../shared/data: a test using any of them (directly or through another
#: fixture) is marked ``slow``, so ``pytest -m "not slow"`` runs the fast unit tests only
SLOW_FIXTURES = frozenset({"minilm", "effnet", "shared_data", "minilm_onnx"})


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
