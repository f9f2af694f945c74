"""Row-wise int8 (``fewshot.export.int8``): the rewrite against a numpy reference on a small graph, and for every
exported encoder kind an input's embedding alone vs inside random batches (cosine >= 0.99999); a portable int8
engine labels the same whether inputs come all at once, in chunks or one at a time."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from fewshot.encoders.onnx import load_onnx
from fewshot.errors import InvalidInputError
from fewshot.export import export_encoder
from fewshot.export.int8 import FLOAT_QMAX, SCHEME, WEIGHT_QMAX, quantize_rowwise
from tests.onnx_exports import exported, scratch_dir

PARITY = 0.99999


# --------------------------------------------------------------------------------------------- the rewrite itself

def _small_graph(path, rng, opset: int = 17) -> dict[str, np.ndarray]:
    """ids (b, s) int64, x (b, s, 8), img (b, 2, 5, 5) → gathered table rows + (x @ W1 + b1) @ W2 (MatMul),
    a Gemm (transB) on x's first token, and a Conv: four outputs. Returns the float weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = {"table": rng.normal(size=(300, 8)).astype(np.float32) * np.linspace(0.1, 3, 300)[:, None],
         "w1": rng.normal(size=(8, 6)).astype(np.float32), "b1": rng.normal(size=6).astype(np.float32),
         "w2": rng.normal(size=(6, 4)).astype(np.float32),
         "wg": rng.normal(size=(5, 8)).astype(np.float32), "bg": rng.normal(size=5).astype(np.float32),
         "wc": rng.normal(size=(3, 2, 3, 3)).astype(np.float32)}
    # a tiny table is below GATHER_MIN_SIZE: make it count as an embedding table for this test
    w["table"] = np.repeat(w["table"], 28, axis=1)[:, :224].astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
             helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("MatMul", ["h1", "w2"], ["y"]),
             helper.make_node("Gather", ["x", "zero"], ["x0"], axis=1),
             helper.make_node("Gemm", ["x0", "wg", "bg"], ["g"], transB=1),
             helper.make_node("Conv", ["img", "wc"], ["c"], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + [
        numpy_helper.from_array(np.asarray(0, np.int64), "zero")]
    graph = helper.make_graph(nodes, "small", [
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 8]),
        helper.make_tensor_value_info("img", TensorProto.FLOAT, ["b", 2, 5, 5])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
         (("emb", ["b", "s", 224]), ("y", ["b", "s", 4]), ("g", ["b", 5]), ("c", ["b", 3, 5, 5]))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return w


def _reference(w: dict, ids: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """numpy row-wise int8 of the small graph's emb, y and g."""
    def q_weight(m, axis, qmax):  # symmetric, one float32 scale per row (axis=1) or column (axis=0)
        scale = (np.abs(m).max(axis=axis, keepdims=True) / qmax).astype(np.float32)
        return np.clip(np.rint(m / scale), -qmax, qmax), scale

    def rowwise(a, m, bias=None):  # per-row scale max|a_row| / 127 (a zero row stays zero)
        wq, ws = q_weight(m, 0, WEIGHT_QMAX)
        s = np.maximum(np.abs(a).max(-1, keepdims=True), np.float32(1e-30)) * np.float32(1 / 127)
        aq = np.clip(np.rint(a / s), -127, 127)
        out = (aq.astype(np.float64) @ wq) * ws * s
        return out if bias is None else out + bias

    tq, ts = q_weight(w["table"], 1, FLOAT_QMAX)
    h1 = rowwise(x, w["w1"]) + w["b1"]
    return {"emb": (tq * ts)[ids], "y": rowwise(h1, w["w2"]), "g": rowwise(x[:, 0], w["wg"].T, w["bg"])}


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_rowwise_rewrite_matches_numpy_and_rows_stand_alone(tmp_path, opset):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    w = _small_graph(tmp_path / "f.onnx", rng, opset)
    counts = quantize_rowwise(tmp_path / "f.onnx", tmp_path / "q.onnx")
    assert counts == {"matmul": 2, "gemm": 1, "gather": 1, "conv": 1}
    ids = rng.integers(0, 300, (6, 5))
    x = (rng.normal(size=(6, 5, 8)) * rng.uniform(0.01, 100, (6, 5, 1))).astype(np.float32)  # rows of any scale
    x[2, 3] = 0.0                                                                                 # and an all-zero row
    img = rng.normal(size=(6, 2, 5, 5)).astype(np.float32)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), opts, providers=["CPUExecutionProvider"])
    names = ["emb", "y", "g", "c"]
    got = dict(zip(names, sess.run(names, {"ids": ids, "x": x, "img": img})))
    ref = _reference(w, ids, x)
    for name in ("emb", "y", "g"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4 * np.abs(ref[name]).max())
    import torch  # the Conv runs in float on dequantised per-channel int8 weights
    wq = np.clip(np.rint(w["wc"] / (np.abs(w["wc"]).max((1, 2, 3), keepdims=True) / FLOAT_QMAX)), -127, 127)
    wd = wq * np.abs(w["wc"]).max((1, 2, 3), keepdims=True) / FLOAT_QMAX
    conv = torch.nn.functional.conv2d(torch.from_numpy(img), torch.from_numpy(wd.astype(np.float32)), padding=1)
    np.testing.assert_allclose(got["c"], conv.numpy(), rtol=1e-4, atol=1e-4)
    # every output row is the same when its input comes alone
    for i in range(len(x)):
        alone = dict(zip(names, sess.run(names, {"ids": ids[i:i + 1], "x": x[i:i + 1], "img": img[i:i + 1]})))
        for name in names:
            np.testing.assert_allclose(alone[name][0], got[name][i], rtol=1e-5, atol=1e-6)


def test_rowwise_rejects_graphs_with_nothing_to_quantise(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "r.onnx"))
    with pytest.raises(InvalidInputError, match="nothing|no MatMul"):
        quantize_rowwise(tmp_path / "r.onnx", tmp_path / "q.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(tmp_path / "o.onnx"))
    with pytest.raises(InvalidInputError, match="opset"):
        quantize_rowwise(tmp_path / "o.onnx", tmp_path / "q.onnx")


# ------------------------------------------------------------------------------- every exported encoder kind

def _banking_texts(shared_data, n: int) -> list[str]:
    with open(shared_data / "text" / "banking77" / "test.csv", newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return texts[::len(texts) // n][:n]


def _alone_vs_random_batches(encode, items: list, rng, probes: int = 12, rounds: int = 3) -> float:
    """Worst cosine between a probe's embedding alone and inside random batches (random companions, random
    position, random batch_size) — ``encode(items, batch_size)`` → (n, dim)."""
    chosen = rng.choice(len(items), probes, replace=False)
    alone = np.concatenate([encode([items[i]], 1) for i in chosen])
    worst = 1.0
    for _ in range(rounds):
        others = [items[i] for i in rng.choice(len(items), int(rng.integers(5, 40)), replace=True)]
        batch = others + [items[i] for i in chosen]
        perm = rng.permutation(len(batch))
        got = encode([batch[i] for i in perm], int(rng.integers(2, 64)))
        got = got[np.argsort(perm)][len(others):]
        worst = min(worst, float((got * alone).sum(1).min()))
    return worst


def test_minilm_int8_text_alone_equals_in_batch(shared_data, minilm):
    out = exported("minilm", "int8")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["quantize"] == "int8" and manifest["quantize_scheme"] == SCHEME
    enc = load_onnx(str(out))
    texts = _banking_texts(shared_data, 200) + ["", "hi", "word " * 300, "Ünïcödé — 日本語 🙂"]
    rng = np.random.default_rng(1)
    assert _alone_vs_random_batches(lambda xs, b: enc.encode_text(xs, batch_size=b), texts, rng) >= PARITY
    for budget in (0, 64, 10_000):  # however the batch is cut into onnxruntime runs
        enc.run_tokens = budget
        assert _alone_vs_random_batches(lambda xs, b: enc.encode_text(xs, batch_size=b), texts, rng,
                                        rounds=1) >= PARITY
    cos = (enc.encode_text(texts) * minilm.encode_text(texts)).sum(1)
    assert cos.mean() >= 0.995 and cos.min() >= 0.97, (cos.mean(), cos.min())


@pytest.fixture(scope="module")
def images(shared_data) -> list[Image.Image]:
    with np.load(shared_data / "images" / "omniglot" / "images_evaluation.npz") as z:
        arrays = z["images"][:10, :2].reshape(-1, 105, 105)
    rng = np.random.default_rng(0)
    return [Image.fromarray(a.astype(np.uint8) * 255) for a in arrays] + [
        Image.fromarray(rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8))
        for h, w in rng.integers(40, 300, (6, 2))]


def test_effnet_int8_image_alone_equals_in_batch(effnet, images):
    out = exported("effnet-lite0", "int8")
    enc = load_onnx(str(out))
    assert enc.quantize_scheme == SCHEME
    assert (out / "image.onnx").stat().st_size < 0.4 * (exported("effnet-lite0") / "image.onnx").stat().st_size
    rng = np.random.default_rng(2)
    assert _alone_vs_random_batches(lambda xs, b: enc.encode_images(xs, batch_size=b), images, rng,
                                    probes=6, rounds=2) >= PARITY
    cos = (enc.encode_images(images) * effnet.encode_images(images, show_progress_bar=False)).sum(1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, (cos.mean(), cos.min())


def test_clip_int8_both_towers_alone_equal_in_batch(images):
    from fewshot.encoders import load_encoder

    clip = load_encoder("clip:ViT-S-32/none", device="cpu", cache=False)  # random weights: export this instance
    out = export_encoder(clip, scratch_dir("clip-int8") / "vit-s-32", quantize="int8")
    enc = load_onnx(str(out))
    assert enc.quantize_scheme == SCHEME and set(enc.sessions) == {"text", "image"}
    rng = np.random.default_rng(3)
    texts = ["a photo of a cat", "a dog", "", "x " * 100, "a diagram of a bridge", "hello world", "日本語"]
    assert _alone_vs_random_batches(lambda xs, b: enc.encode_text(xs, batch_size=b), texts, rng, probes=5,
                                    rounds=2) >= PARITY
    assert _alone_vs_random_batches(lambda xs, b: enc.encode_images(xs, batch_size=b), images[-6:], rng,
                                    probes=3, rounds=2) >= PARITY
    assert (enc.encode(texts) * clip.encode_text(texts)).sum(1).min() >= 0.99
    assert (enc.encode(images[-6:]) * clip.encode_images(images[-6:])).sum(1).min() >= 0.99


# ---------------------------------------------------------------------------------- a portable int8 engine

def test_portable_int8_engine_labels_do_not_depend_on_how_inputs_are_grouped(shared_data, tmp_path):
    """64 Banking77 intents, 5 examples each; 300 queries predicted in one call, in chunks of 100, in random chunks
    and one at a time: identical labels (the issue found 34 of 1,076 and 12 of 300 changing with dynamic int8)."""
    from fewshot.engine.engine import FewShotEngine

    with open(shared_data / "text" / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["category"] for r in rows})[:64]
    eng = FewShotEngine(encoder="minilm")
    for c in classes:
        eng.add_class(c, examples=[r["text"] for r in rows if r["category"] == c][:5])
    eng.save(tmp_path / "int8", portable=True, quantize="int8")
    portable = FewShotEngine.load(tmp_path / "int8")
    assert portable.encoder.quantize_scheme == SCHEME
    queries = _banking_texts(shared_data, 300)
    at_once = portable.predict(queries)
    labels, scores = [p.label for p in at_once], np.asarray([p.score for p in at_once])
    rng = np.random.default_rng(4)
    cuts = np.sort(rng.choice(np.arange(1, len(queries)), 12, replace=False))
    groupings = {"chunks of 100": [queries[i:i + 100] for i in range(0, len(queries), 100)],
                 "random chunks": [list(c) for c in np.split(np.asarray(queries, dtype=object), cuts)],
                 "one at a time": [[q] for q in queries]}
    for how, chunks in groupings.items():
        preds = [p for chunk in chunks for p in portable.predict(chunk)]
        assert [p.label for p in preds] == labels, how
        np.testing.assert_allclose([p.score for p in preds], scores, atol=1e-4, err_msg=how)
