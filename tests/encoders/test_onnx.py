"""The 'onnx:<dir>' encoder: parity with torch, batching, errors, threads, and a torch-free process."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from fewshot.encoders import load_encoder
from fewshot.encoders.onnx import RUN_TOKENS_PER_THREAD, ONNXEncoder, default_threads, load_onnx
from fewshot.errors import CorruptIndexError, EncoderUnavailableError, InvalidInputError
from tests.onnx_exports import exported, run_torch_free, scratch_dir

EDGE_TEXTS = ["", "   ", "  padded with spaces  ", "word " * 400, "Ünïcödé — 日本語 🙂", "a\tb\nc"]


@pytest.fixture(scope="module")
def banking_sample(shared_data) -> list[str]:
    with open(shared_data / "text" / "banking77" / "test.csv", newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return texts[::15] + EDGE_TEXTS  # 206 test sentences + edge cases


@pytest.fixture(scope="module")
def minilm_onnx() -> ONNXEncoder:
    return load_onnx(str(exported("minilm")))


def test_fp32_parity_with_torch(minilm, minilm_onnx, banking_sample):
    ref = minilm.encode_text(banking_sample)
    got = minilm_onnx.encode_text(banking_sample)
    assert got.dtype == np.float32 and got.shape == (len(banking_sample), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (ref * got).sum(1)
    assert cosine.min() >= 0.999, f"worst cosine {cosine.min():.5f} on {banking_sample[int(cosine.argmin())]!r}"


def test_batching_keeps_input_order(minilm_onnx, banking_sample):
    texts = banking_sample[:40]
    one_by_one = np.concatenate([minilm_onnx.encode_text([t]) for t in texts])
    batched = minilm_onnx.encode_text(texts, batch_size=16)
    assert (one_by_one * batched).sum(1).min() >= 0.9999
    # a permutation of the inputs permutes the outputs
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(minilm_onnx.encode_text([texts[i] for i in perm], batch_size=7), batched[perm],
                               atol=1e-5)


def _record_runs(encoder, monkeypatch) -> list[tuple[int, int]]:
    """(rows, padded width) of every onnxruntime run the encoder makes from now on."""
    runs: list[tuple[int, int]] = []
    real = encoder._pad
    monkeypatch.setattr(encoder, "_pad", lambda ids: runs.append((len(ids), max(map(len, ids)))) or real(ids))
    return runs


def test_batches_sorted_by_token_count(minilm_onnx, banking_sample, monkeypatch):
    texts = banking_sample[:40]
    runs = _record_runs(minilm_onnx, monkeypatch)
    monkeypatch.setattr(minilm_onnx, "run_tokens", 0)  # whole batches
    minilm_onnx.encode_text(texts, batch_size=8)
    lengths = sorted((len(i) for i in minilm_onnx._token_ids(texts)), reverse=True)
    assert [w for _, w in runs] == lengths[::8]  # each batch padded only to its own longest text
    assert [n for n, _ in runs] == [8] * 5


def test_runs_stay_within_the_token_budget(minilm_onnx, banking_sample, monkeypatch):
    texts = banking_sample
    reference = minilm_onnx.encode_text(texts, batch_size=64)
    lengths = sorted((len(i) for i in minilm_onnx._token_ids(texts)), reverse=True)
    for budget in (1, 100, 256):
        runs = _record_runs(minilm_onnx, monkeypatch)
        monkeypatch.setattr(minilm_onnx, "run_tokens", budget)
        got = minilm_onnx.encode_text(texts, batch_size=64)
        assert sum(n for n, _ in runs) == len(texts)
        start = 0
        for n, width in runs:  # consecutive in length order, the longest first, as many as the budget allows
            assert width == lengths[start]
            assert n == min(64, len(texts) - start, max(1, budget // width))
            start += n
        assert (got * reference).sum(1).min() >= 0.99999
    monkeypatch.setattr(minilm_onnx, "run_tokens", 0)
    assert minilm_onnx._runs(np.asarray([5, 4, 3]), 2) == [(0, 2), (2, 3)]
    with pytest.raises(InvalidInputError, match="run_tokens"):
        ONNXEncoder(str(exported("minilm")), run_tokens=-1)
    assert ONNXEncoder(str(exported("minilm")), threads=3).run_tokens == 3 * RUN_TOKENS_PER_THREAD


def test_registry_name_and_describe(minilm_onnx):
    path = str(exported("minilm"))
    enc = load_encoder(f"onnx:{path}", cache=False)
    assert isinstance(enc, ONNXEncoder) and enc.name == f"onnx:{path}"
    assert enc.dim == 384 and enc.modalities == frozenset({"text"})
    d = enc.describe()
    assert d["source_encoder"] == "minilm" and d["quantize"] is None and d["name"] == enc.name
    assert d["quantize_scheme"] is None
    assert load_onnx(str(exported("minilm", "int8"))).describe()["quantize_scheme"] == "rowwise-int8-v1"
    assert enc.zero_shot_templates == load_encoder("minilm").zero_shot_templates


def test_text_only_encoder_rejects_images_and_bad_arguments(minilm_onnx):
    from PIL import Image
    with pytest.raises(InvalidInputError):
        minilm_onnx.encode_images([Image.new("RGB", (8, 8))])
    with pytest.raises(InvalidInputError):
        minilm_onnx.encode_text("not a list")
    with pytest.raises(InvalidInputError):
        minilm_onnx.encode_text(["a", 3])
    with pytest.raises(InvalidInputError):
        minilm_onnx.encode_text(["a"], batch_size=0)
    with pytest.raises(InvalidInputError):
        load_onnx(str(exported("minilm")), device="tpu")


def test_threads_setting(monkeypatch):
    path = str(exported("minilm", "int8"))
    assert ONNXEncoder(path, threads=1).threads == 1
    monkeypatch.setenv("FEWSHOT_ONNX_THREADS", "3")
    assert default_threads() == 3 and ONNXEncoder(path).threads == 3
    monkeypatch.setenv("FEWSHOT_ONNX_THREADS", "zero")
    with pytest.raises(InvalidInputError):
        default_threads()
    monkeypatch.delenv("FEWSHOT_ONNX_THREADS")
    assert 1 <= default_threads() <= 8
    with pytest.raises(InvalidInputError):
        ONNXEncoder(path, threads=0)


def test_missing_and_corrupt_exports(tmp_path):
    with pytest.raises(EncoderUnavailableError, match="does not exist"):
        load_onnx(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptIndexError, match="manifest.json"):
        load_onnx(str(tmp_path / "empty"))

    src = exported("minilm", "int8")
    bad = scratch_dir("corrupt") / "copy"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(src, bad)
    assert load_onnx(str(bad)).encode_text(["ok"]).shape == (1, 384)

    tok = bad / "tokenizer.json"
    tok.write_bytes(tok.read_bytes().replace(b"[PAD]", b"[PAX]", 1))  # silent edit
    with pytest.raises(CorruptIndexError, match="sha256"):
        load_onnx(str(bad))
    shutil.copy(src / "tokenizer.json", tok)

    (bad / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptIndexError, match="cannot parse"):
        load_onnx(str(bad))
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    (bad / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (bad / "text.onnx").unlink()
    with pytest.raises(CorruptIndexError, match="missing text.onnx"):
        load_onnx(str(bad))
    manifest["format_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(CorruptIndexError, match="format_version"):
        load_onnx(str(bad))


def test_torch_free_process_encodes_like_this_one(minilm_onnx, banking_sample):
    path = str(exported("minilm"))
    texts = banking_sample[:20]
    out = run_torch_free(f"""
import json
from fewshot import load_encoder
enc = load_encoder({'onnx:' + path!r})
vecs = enc.encode(json.loads({json.dumps(json.dumps(texts))}))
print(json.dumps({{"vectors": vecs.tolist()}}))
""")
    np.testing.assert_allclose(np.asarray(out["vectors"], np.float32), minilm_onnx.encode_text(texts), atol=1e-5)


def _legacy_int8_export(tmp_path) -> str:
    """An int8 export as fewshot wrote them before ``quantize_scheme``: onnxruntime ``quantize_dynamic`` (per-batch
    activation scales) of the fp32 graph, manifest without the scheme."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from fewshot._core import sha256_file

    src, out = exported("minilm"), tmp_path / "legacy-int8"
    shutil.copytree(src, out)
    quantize_dynamic(str(src / "text.onnx"), str(out / "text.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("quantize_scheme", None)
    manifest["quantize"] = "int8"
    manifest["files"] = {name: sha256_file(out / name) for name in manifest["files"]}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return str(out)


def test_an_old_dynamic_int8_export_loads_and_runs_one_input_at_a_time(tmp_path, banking_sample, monkeypatch):
    """Old int8 exports still load and run; their graph picks activation scales per run, so the runtime feeds it one
    input per run: results no longer depend on the other inputs of a call (alone vs in a batch: cosine >= 0.99999;
    run in batches, the same graph gives cosine < 0.999 for some texts)."""
    enc = load_onnx(_legacy_int8_export(tmp_path))
    assert enc.quantize == "int8" and enc.quantize_scheme == "dynamic-per-batch" and enc.max_run_inputs == 1
    texts = banking_sample[:48]
    alone = np.concatenate([enc.encode_text([t]) for t in texts])
    runs = _record_runs(enc, monkeypatch)
    batched = enc.encode_text(texts, batch_size=16)
    assert {n for n, _ in runs} == {1} and len(runs) == len(texts)
    assert (alone * batched).sum(1).min() >= 0.99999
    monkeypatch.setattr(enc, "max_run_inputs", None)  # what batching this graph did before
    assert (alone * enc.encode_text(texts, batch_size=16)).sum(1).min() < 0.999
