"""`fewshot export`: manifests, int8, image backbones and CLIP towers, CLI arguments, and a portable engine
that loads and predicts in a process where torch cannot be imported."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from fewshot.cli import main as cli_main
from fewshot.encoders.onnx import load_onnx, preprocess_image
from fewshot.errors import InvalidInputError
from fewshot.export import export_encoder
from tests.onnx_exports import exported, run_torch_free, scratch_dir


def _banking(shared_data, split: str) -> tuple[list[str], list[str]]:
    with open(shared_data / "text" / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


@pytest.fixture(scope="module")
def omniglot_images(shared_data) -> list[Image.Image]:
    with np.load(shared_data / "images" / "omniglot" / "images_evaluation.npz") as z:
        arrays = z["images"][:12, :2]  # True = background
    images = [Image.fromarray(a.astype(np.uint8) * 255) for a in arrays.reshape(-1, 105, 105)]
    rng = np.random.default_rng(0)  # odd sizes and aspect ratios exercise resize/crop rounding
    images += [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in
               [(97, 131), (300, 120), (224, 224), (50, 401)]]
    return images


def test_text_manifest(shared_data):
    out = exported("minilm")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "fewshot-onnx" and manifest["kind"] == "text"
    assert manifest["source_encoder"] == "minilm" and manifest["dim"] == 384
    assert manifest["modalities"] == ["text"] and manifest["max_seq_length"] == 256
    assert manifest["quantize"] is None and manifest["quantize_scheme"] is None
    assert manifest["tokenizer"]["file"] == "tokenizer.json"
    assert set(manifest["files"]) == {"text.onnx", "tokenizer.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    # the tokenizer is stored without its fixed 128-token padding; the loader sets longest-padding + truncation
    tok = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert tok["padding"] is None and tok["truncation"] is None
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temp dir left


def test_graph_has_dynamic_batch_and_sequence_axes():
    import onnx
    model = onnx.load(str(exported("minilm") / "text.onnx"), load_external_data=False)
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # traced with eager attention (no SDPA boolean mask / NaN guards in the graph)
    assert not [n for n in model.graph.node if n.op_type == "IsNaN"]


def test_int8_export_loads_and_predicts(minilm, shared_data):
    fp32, int8 = exported("minilm"), exported("minilm", "int8")
    manifest = json.loads((int8 / "manifest.json").read_text())
    assert manifest["quantize"] == "int8" and manifest["quantize_scheme"] == "rowwise-int8-v1"
    assert (int8 / "text.onnx").stat().st_size < 0.4 * (fp32 / "text.onnx").stat().st_size
    enc = load_onnx(str(int8))
    texts, labels = _banking(shared_data, "test")
    train_texts, train_labels = _banking(shared_data, "train")
    classes = sorted(set(labels))[:10]
    support = {c: [t for t, lab in zip(train_texts, train_labels) if lab == c][:5] for c in classes}
    queries = [(t, lab) for t, lab in zip(texts, labels) if lab in classes][::4]  # 100 queries

    from fewshot.classifiers import ArraySupport, PrototypeClassifier

    def accuracy(encoder) -> tuple[float, np.ndarray]:
        vecs = encoder.encode_text([t for c in classes for t in support[c]])
        sup = ArraySupport(vecs, np.repeat(np.arange(len(classes)), 5))
        pred = PrototypeClassifier().fit(sup).scores(encoder.encode_text([q for q, _ in queries])).argmax(1)
        return float(np.mean([classes[p] == lab for p, (_, lab) in zip(pred, queries)])), pred

    acc_int8, pred_int8 = accuracy(enc)
    acc_torch, pred_torch = accuracy(minilm)
    assert acc_int8 >= acc_torch - 0.05, (acc_int8, acc_torch)
    assert np.mean(pred_int8 == pred_torch) >= 0.9
    cos = (enc.encode_text([q for q, _ in queries]) * minilm.encode_text([q for q, _ in queries])).sum(1)
    assert cos.mean() >= 0.98, cos.mean()


def test_export_argument_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="quantize"):
        export_encoder("minilm", tmp_path / "x", quantize="int4")
    with pytest.raises(InvalidInputError, match="already an ONNX export"):
        export_encoder(f"onnx:{exported('minilm')}", tmp_path / "y")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="not a fewshot ONNX export"):
        export_encoder("effnet-lite0", tmp_path / "busy")
    assert (tmp_path / "busy" / "precious.txt").read_text() == "keep me"
    with pytest.raises(InvalidInputError):
        export_encoder(object(), tmp_path / "z")


def test_cli_exports_effnet_with_preprocessing_and_parity(effnet, omniglot_images, capsys):
    out = scratch_dir("cli") / "effnet"
    assert cli_main(["export", "--encoder", "effnet-lite0", "--out", str(out)]) == 0  # fp32: no --quantize
    assert "onnx:" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "image" and manifest["dim"] == 1280 and manifest["modalities"] == ["image"]
    steps = manifest["preprocessing"]["steps"]
    assert steps[0] == {"op": "resize", "size": 256, "interpolation": "bicubic"}
    assert steps[1] == {"op": "center_crop", "size": [224, 224]}
    assert steps[-1] == {"op": "normalize", "mean": [0.5] * 3, "std": [0.5] * 3}
    # PIL/numpy preprocessing reproduces torchvision's exactly
    for im in omniglot_images[-4:] + omniglot_images[:2]:
        np.testing.assert_allclose(preprocess_image(im, steps), effnet.transform(im.convert("RGB")).numpy(),
                                   atol=1e-6)
    enc = load_onnx(str(out))
    cosine = (enc.encode(omniglot_images) * effnet.encode_images(omniglot_images)).sum(1)
    assert cosine.min() >= 0.999, cosine.min()
    with pytest.raises(InvalidInputError):
        enc.encode_text(["a text"])
    with pytest.raises(SystemExit):
        cli_main(["export", "--encoder", "minilm", "--out", "x", "--quantize", "fp16"])


def test_clip_towers_and_tokenizer(omniglot_images):
    from fewshot.encoders import load_encoder

    clip = load_encoder("clip:ViT-S-32/none", device="cpu", cache=False)  # random weights: export this instance
    out = export_encoder(clip, scratch_dir("clip") / "vit-s-32")
    enc = load_onnx(str(out))
    manifest = enc.manifest
    assert manifest["kind"] == "clip" and set(manifest["models"]) == {"text", "image"}
    assert enc.modalities == frozenset({"text", "image"}) and enc.dim == clip.dim
    assert enc.zero_shot_templates == clip.zero_shot_templates
    texts = ["a photo of a cat", "Hello   WORLD!! it's 2024, café naïve — ok?", "", "日本語", "x " * 120,
             "don't stop; re-use the 3rd item's value"]
    np.testing.assert_array_equal(enc._tokenize(texts)["input_ids"], clip.tokenizer(texts).numpy())
    assert (enc.encode(texts) * clip.encode_text(texts)).sum(1).min() >= 0.999
    images = omniglot_images[-4:]
    assert (enc.encode(images) * clip.encode_images(images)).sum(1).min() >= 0.999


def _portable_engine_case(shared_data):
    texts, labels = _banking(shared_data, "train")
    test_texts, test_labels = _banking(shared_data, "test")
    classes = sorted(set(labels))[:8]
    examples = {c: [t for t, lab in zip(texts, labels) if lab == c][:4] for c in classes}
    queries = [t for t, lab in zip(test_texts, test_labels) if lab in classes][::8]  # 40 queries
    return classes, examples, queries


def test_portable_engine_predicts_without_torch(shared_data, tmp_path):
    from fewshot.engine.engine import FewShotEngine

    classes, examples, queries = _portable_engine_case(shared_data)
    eng = FewShotEngine(encoder="minilm")
    for c in classes:
        eng.add_class(c, examples=examples[c], description=c.replace("_", " "))
    expected = [p.label for p in eng.predict(queries)]
    expected_proba = eng.predict_proba(queries)
    eng.save(tmp_path / "portable", portable=True)
    saved = tmp_path / "portable"
    out = run_torch_free(f"""
import json, time
t = time.perf_counter()
from fewshot import FewShotEngine
eng = FewShotEngine.load({str(saved)!r})
queries = json.loads({json.dumps(json.dumps(queries))})
labels = [p.label for p in eng.predict(queries)]
proba = eng.predict_proba(queries)
print(json.dumps({{"labels": labels, "proba": proba.tolist(), "encoder": eng.encoder.name,
                  "classes": eng.classes}}))
""")
    assert out["encoder"].startswith("onnx:")
    assert out["classes"] == eng.classes
    assert out["labels"] == expected
    np.testing.assert_allclose(np.asarray(out["proba"]), expected_proba, atol=1e-3)
