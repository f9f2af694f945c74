"""Issue 19's small engine items: an informative repr, a not-found load error, and a portable load that hashes
its encoder's files once (the snapshot's checksums) and reuses the encoder within the process."""
from __future__ import annotations

import numpy as np
import pytest

from fewshot import FewShotEngine
from fewshot._core import plural
from fewshot.engine import lifecycle
from fewshot.errors import CorruptIndexError, SaveNotFoundError
from tests.fakes import FakeTextEncoder


def test_repr_names_encoder_classes_examples_and_classifier(fake_text_encoder):
    engine = FewShotEngine(encoder=fake_text_encoder)
    assert repr(engine) == "FewShotEngine(encoder='fake-text', dim=16, classes=0, examples=0, classifier='prototype')"
    engine.add_class("card", examples=["I lost my card", "card gone", "no card"])
    engine.add_class("rate", description="exchange rates")
    engine.set_classifier("knn")
    assert repr(engine) == "FewShotEngine(encoder='fake-text', dim=16, classes=2, examples=3, classifier='knn')"
    engine.adapt(["some unlabeled text", "another one", "and a third"])
    assert repr(engine).endswith(", adapted='recenter')")


def test_load_of_a_missing_directory_is_a_not_found_error(tmp_path):
    for where in ("no_such_dir", tmp_path / "missing", tmp_path):   # the last exists but holds no save
        with pytest.raises(SaveNotFoundError) as info:
            FewShotEngine.load(where)
        assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CorruptIndexError)


def test_plural():
    assert [plural(n, "class", "classes") for n in (0, 1, 2)] == ["0 classes", "1 class", "2 classes"]
    assert plural(1, "example") == "1 example" and plural(3, "example") == "3 examples"


@pytest.fixture(scope="module")
def portable_save(tmp_path_factory):
    engine = FewShotEngine(encoder="minilm")
    engine.add_class("card", examples=["I lost my card", "my card is gone", "card stolen"])
    engine.add_class("rate", examples=["what is the exchange rate", "euro to dollar", "currency rates"])
    path = tmp_path_factory.mktemp("portable") / "engine"
    engine.save(path, portable=True)
    return path


def test_a_portable_load_reuses_its_encoder_and_still_detects_damage(portable_save, tmp_path, monkeypatch):
    import shutil

    from fewshot._core import sha256_file as real_sha256

    hashed: list[str] = []
    monkeypatch.setattr("fewshot.index.storage.sha256_file", lambda p: hashed.append(str(p)) or real_sha256(p))
    monkeypatch.setattr("fewshot.encoders.onnx.sha256_file", lambda p: hashed.append(str(p)) or real_sha256(p))
    first = FewShotEngine.load(portable_save)
    onnx_files = [h for h in hashed if h.endswith(".onnx")]
    assert len(onnx_files) == 1, hashed          # the snapshot's check only, not the export's own again
    second = FewShotEngine.load(portable_save)
    assert second.encoder is first.encoder       # one set of weights per process
    queries = ["where is my card", "dollar rate please"]
    assert [p.label for p in second.predict(queries)] == ["card", "rate"]

    damaged = tmp_path / "damaged"
    shutil.copytree(portable_save, damaged)
    model = next(damaged.glob("snap-*/encoder/*.onnx"))
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(CorruptIndexError, match="checksum"):
        FewShotEngine.load(damaged)


def test_background_sentences_go_through_the_disk_cache_only_for_file_backed_encoders(tmp_path, monkeypatch,
                                                                                     portable_save):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    fake = FakeTextEncoder()
    first = lifecycle._generic_vectors(fake)
    assert not (tmp_path / "cache").exists()     # no weights on disk: nothing to fingerprint, nothing cached
    engine = FewShotEngine.load(portable_save)
    vectors = lifecycle._generic_vectors(engine.encoder)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    np.testing.assert_array_equal(lifecycle._generic_vectors(engine.encoder), vectors)
    assert first.shape[0] == vectors.shape[0]


def test_score_meaning_says_whether_prediction_scores_are_calibrated(fake_text_encoder, monkeypatch):
    engine = FewShotEngine(encoder=fake_text_encoder)
    for c in range(3):
        engine.add_class(f"class {c}", examples=[f"text {c} number {i}" for i in range(6)])
    assert engine.score_meaning == "calibrated"
    scores = [p.score for p in engine.predict(["text 1 number 9", "something else"])]
    engine.refine("linear")
    assert engine.score_meaning.startswith("softmax: the learned classifier 'linear'")
    engine.set_classifier("prototype")
    assert engine.score_meaning == "calibrated"       # back, and the scores with it
    assert [p.score for p in engine.predict(["text 1 number 9", "something else"])] == pytest.approx(scores)
    monkeypatch.setattr(lifecycle, "MAX_CALIBRATED_EXAMPLES", 10)
    assert engine.score_meaning.startswith("softmax: more than 10 examples")
    monkeypatch.undo()
    engine.calibrate = False
    assert engine.score_meaning == "softmax: calibrate=False"
    tiny = FewShotEngine(encoder=fake_text_encoder)
    tiny.add_class("a", examples=["one"])
    tiny.add_class("b", examples=["two"])
    assert tiny.score_meaning.startswith("softmax: too few leave-one-out scores")
