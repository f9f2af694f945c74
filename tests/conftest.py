"""Shared fixtures: encoders are loaded once per session; real data comes from ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEWSHOT_SHARED_DATA", REPO.parent / "shared" / "data"))


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


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
