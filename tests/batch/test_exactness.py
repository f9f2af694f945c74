"""``fewshot batch`` gives exactly ``FewShotEngine.predict`` (same labels, scores within 1e-6, top-k too) for real
engines, streaming and on Ray, with open-set rejection on: a torch MiniLM text engine, a portable fp32 MiniLM engine
(ONNX, no torch in the workers) and an EfficientNet-Lite0 image engine."""
from __future__ import annotations

import csv
from importlib.resources import files

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fewshot.batch import classify_files
from fewshot.engine import FewShotEngine
from tests.batch.conftest import write_corpus

OUT_OF_SCOPE = ["what is the weather like in Lisbon tomorrow", "recommend me a good science fiction novel",
                "how many legs does a spider have", "play some jazz music", "who won the football match",
                "translate good morning into French", "what is the capital of Australia",
                "set an alarm for seven am"]
TOP_K = 3
pytestmark = pytest.mark.slow  # real models (the case fixtures load them lazily)


def banking_sample() -> tuple[dict[str, list[str]], list[str]]:
    """(support texts by label, query texts) from the Banking77 sample shipped with fewshot."""
    with files("fewshot").joinpath("data/banking77_sample.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    support: dict[str, list[str]] = {}
    for r in rows:
        if r["split"] == "support":
            support.setdefault(r["label"], []).append(r["text"])
    return support, [r["text"] for r in rows if r["split"] == "query"] + OUT_OF_SCOPE


def colour_images(folder) -> tuple[dict[str, list[str]], list[str]]:
    """(support image paths by class, query image paths): striped / plain images in three colours, 64 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (30, 50, 200)}
    support: dict[str, list[str]] = {k: [] for k in base}
    queries = []
    for name, rgb in base.items():
        for i in range(9):
            px = np.clip(np.asarray(rgb) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
            px[:, ::8] = 255 if i % 2 else px[:, ::8]
            path = folder / f"{name}{i}.png"
            Image.fromarray(px).save(path)
            (support[name] if i < 5 else queries).append(path.name)
    for i in range(4):  # out of distribution: noise
        path = folder / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        queries.append(path.name)
    return support, queries


@pytest.fixture(scope="session")
def text_engine(minilm):
    support, queries = banking_sample()
    engine = FewShotEngine(encoder=minilm)
    for label, texts in support.items():
        engine.add_class(label, examples=texts)
    return engine, queries


@pytest.fixture(scope="session")
def torch_text_case(text_engine, tmp_path_factory):
    engine, queries = text_engine
    path = tmp_path_factory.mktemp("exact") / "torch-text"
    engine.save(path)
    return path, queries, "text", engine.encoder


def _portable_case(text_engine, tmp_path_factory, quantize):
    engine, queries = text_engine
    path = tmp_path_factory.mktemp("exact") / f"portable-{quantize or 'fp32'}"
    engine.save(path, portable=True, quantize=quantize)
    return path, queries, "text", None


@pytest.fixture(scope="session")
def portable_fp32_case(text_engine, tmp_path_factory):
    return _portable_case(text_engine, tmp_path_factory, None)


@pytest.fixture(scope="session")
def portable_int8_case(text_engine, tmp_path_factory):
    return _portable_case(text_engine, tmp_path_factory, "int8")


@pytest.fixture(scope="session")
def image_case(effnet, tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    support, queries = colour_images(root / "images")
    engine = FewShotEngine(encoder=effnet)
    for label, names in support.items():
        engine.add_class(label, examples=[str(root / "images" / n) for n in names])
    engine.save(root / "image-engine")
    return root / "image-engine", [f"images/{n}" for n in queries], "image", effnet


#: the engines the batch output must match exactly (int8: the row-wise export, which does not depend on the batch)
CASES = [pytest.param("torch_text_case", id="torch-text"), pytest.param("portable_fp32_case", id="portable-fp32"),
         pytest.param("portable_int8_case", id="portable-int8"), pytest.param("image_case", id="effnet-image")]


@pytest.mark.parametrize("mode", ["streaming", "ray"])
@pytest.mark.parametrize("case", CASES)
def test_batch_equals_predict(request, case, mode, tmp_path):
    engine_dir, inputs, kind, encoder = request.getfixturevalue(case)  # encoder: the session's loaded model
    listing = engine_dir.parent / f"{engine_dir.name}-inputs.csv"   # image paths are relative to this file
    if not listing.exists():
        write_corpus(listing, inputs)
    options = {"encoder": encoder}      # streaming reuses the loaded model; Ray workers load the saved name
    if mode == "ray":
        request.getfixturevalue("ray_local")
        options = {"ray": True, "workers": 1, "log_file": tmp_path / "ray.log", "encoder": None}
    out = tmp_path / "out"
    result = classify_files(engine_dir, [listing], out, top_k=TOP_K, reject=True, batch_size=16, **options)

    reference = FewShotEngine.load(engine_dir, encoder=encoder)
    queries = [str(listing.parent / x) for x in inputs] if kind == "image" else inputs
    preds = reference.predict(queries, top_k=TOP_K, reject=True)
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == list(range(len(inputs))) and result.rows == len(inputs)
    for i, p in enumerate(preds):
        assert rows[i]["label"] == p.label, (i, inputs[i])
        assert abs(rows[i]["score"] - p.score) <= 1e-6
        assert [t["label"] for t in rows[i]["top_k"]] == [lab for lab, _ in p.top_k]
        np.testing.assert_allclose([t["score"] for t in rows[i]["top_k"]], [s for _, s in p.top_k], atol=1e-6)
    rejected = sum(p.label is None for p in preds)
    assert 0 < rejected < len(preds), "rejection should reject some inputs and keep most"
    assert result.rejected == rejected
