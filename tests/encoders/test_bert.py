"""The quick BERT path (fewshot.encoders.bert): the same embeddings as sentence-transformers, from torch alone,
for exactly the folders it understands."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fewshot.encoders.bert import read_spec
from fewshot.encoders.sentence import SentenceTransformerEncoder, load_sentence_transformer, minilm_path

REPO = Path(__file__).resolve().parents[2]
EDGE_TEXTS = ["", "   padded   ", "Héllo wörld, ÇA VA? 你好世界 😀", "word " * 400, "a", "I lost my card!!!",
              "what's the exchange rate for euros to dollars today?"]


@pytest.fixture(scope="module")
def st_model():
    return load_sentence_transformer(minilm_path(), "cpu")


@pytest.fixture(scope="module")
def texts(shared_data):
    with open(shared_data / "text" / "banking77" / "test.csv", newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return rows[::40] + EDGE_TEXTS   # 77 real texts of every length + edge cases


def reference(model, texts):
    return model.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)


def test_minilm_is_read_as_a_plain_bert():
    spec = read_spec(minilm_path())
    assert spec is not None
    assert (spec.hidden, spec.layers, spec.heads, spec.pooling, spec.max_seq_length) == (384, 6, 12, "mean", 256)


def test_same_embeddings_as_sentence_transformers(st_model, texts):
    quick = SentenceTransformerEncoder(minilm_path(), name="minilm-quick-test", device="cpu")
    assert quick._quick is not None and quick._model is None      # nothing of sentence-transformers loaded
    got, want = quick.encode_text(texts, batch_size=16), reference(st_model, texts)
    assert got.shape == want.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert float((got * want).sum(1).min()) > 0.99999
    np.testing.assert_allclose(quick.encode_text(texts[:5], batch_size=2), got[:5], atol=1e-5)


def test_a_folder_saved_by_sentence_transformers_6_reads_the_same(st_model, texts, tmp_path):
    """The newer layout (max length in tokenizer_config.json, pooling_mode) — what a fine-tune saves."""
    st_model.save(str(tmp_path / "saved"))
    spec = read_spec(tmp_path / "saved")
    assert spec is not None and spec.max_seq_length == st_model.max_seq_length == 256
    quick = SentenceTransformerEncoder(str(tmp_path / "saved"), device="cpu")
    assert quick._quick is not None
    assert np.abs(quick.encode_text(texts) - reference(st_model, texts)).max() < 1e-5


def test_model_is_built_on_first_use_and_save_copies_the_folder(st_model, tmp_path):
    quick = SentenceTransformerEncoder(minilm_path(), name="minilm-lazy-test", device="cpu")
    assert quick._model is None
    assert quick.model.max_seq_length == 256 and quick._model is not None   # for fine-tunes and exports
    assert quick.save_to(tmp_path / "copy") == "st:copy"
    again = SentenceTransformerEncoder(str(tmp_path / "copy"), device="cpu")
    np.testing.assert_allclose(again.encode_text(EDGE_TEXTS), reference(st_model, EDGE_TEXTS), atol=1e-5)


def test_max_seq_length_override_truncates_like_sentence_transformers(st_model):
    quick = SentenceTransformerEncoder(minilm_path(), name="minilm-short-test", device="cpu", max_seq_length=8)
    long_text = ["a fairly long sentence about a lost bank card that keeps going on and on"]
    st_model.max_seq_length = 8
    try:
        want = reference(st_model, long_text)
    finally:
        st_model.max_seq_length = 256
    assert np.abs(quick.encode_text(long_text) - want).max() < 1e-5


def _copy(tmp_path, name="model"):
    target = tmp_path / name
    shutil.copytree(minilm_path(), target)
    return target


@pytest.mark.parametrize("change", ["dense module", "max pooling", "mpnet config", "no tokenizer.json",
                                    "lower-cases", "default prompt", "fp16 dtype"])
def test_anything_not_understood_falls_back_to_sentence_transformers(tmp_path, change):
    folder = _copy(tmp_path)

    def edit(rel, fn):
        path = folder / rel
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))

    if change == "dense module":
        edit("modules.json", lambda m: m[:2] + [{"idx": 2, "name": "2", "path": "2_Dense",
                                                 "type": "sentence_transformers.models.Dense"}])
    elif change == "max pooling":
        edit("1_Pooling/config.json", lambda c: {**c, "pooling_mode_mean_tokens": False,
                                                 "pooling_mode_max_tokens": True})
    elif change == "mpnet config":
        edit("config.json", lambda c: {**c, "model_type": "mpnet"})
    elif change == "no tokenizer.json":
        (folder / "tokenizer.json").unlink()
    elif change == "lower-cases":
        edit("sentence_bert_config.json", lambda c: {**c, "do_lower_case": True})
    elif change == "default prompt":
        edit("config_sentence_transformers.json", lambda c: {**c, "prompts": {"query": "query: "},
                                                             "default_prompt_name": "query"})
    else:
        from safetensors.torch import load_file, save_file

        weights = load_file(str(folder / "model.safetensors"))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
                  str(folder / "model.safetensors"))
        assert read_spec(folder) is not None        # only the weights tell: the encoder falls back when it reads them
        encoder = SentenceTransformerEncoder(str(folder), device="cpu")
        assert encoder._quick is None and encoder._model is not None
        return
    assert read_spec(folder) is None


def test_the_default_encoder_never_imports_sentence_transformers():
    code = ("import sys; from fewshot import FewShotEngine; e = FewShotEngine(encoder='minilm'); "
            "e.add_class('card', examples=['I lost my card']); e.add_class('rate', description='exchange rates'); "
            "e.predict(['where is my card']); "
            "print(sorted(m for m in ('sentence_transformers', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO),
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
