"""FewShotEngine contract (DESIGN.md) on the offline MiniLM encoder."""
import json
import subprocess
import sys

import numpy as np
import pytest

from fewshot import FewShotEngine, Prediction
from fewshot.errors import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateClassError,
    EmptyClassError,
    EmptyInputError,
    InvalidInputError,
    NonFiniteError,
    NotFittedError,
    UnknownClassError,
)

QUERIES = ["where is my card?", "hello, good morning", "how much is a dollar in euros", "my card never came"]


@pytest.fixture
def engine(minilm):
    eng = FewShotEngine(encoder=minilm)
    eng.add_class("card_lost", examples=["I lost my card", "my card was stolen"],
                  description="the customer lost a card")
    eng.add_class("exchange_rate", examples=["what is the exchange rate", "how many euros for a pound"])
    eng.add_class("greeting", description="saying hello")
    return eng


def snapshot(eng):
    return (eng.classes, len(eng.index), eng.index.prototypes().copy(), eng.predict_proba(QUERIES))


def test_contract(engine):
    preds = engine.predict(QUERIES, top_k=3)
    assert all(isinstance(p, Prediction) for p in preds)
    assert [p.label for p in preds[:3]] == ["card_lost", "greeting", "exchange_rate"]
    assert all(len(p.top_k) == 3 and p.top_k[0] == (p.label, p.score) for p in preds)
    probs = engine.predict_proba(QUERIES)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert engine.classes == ["card_lost", "exchange_rate", "greeting"]
    assert [p.label for p in preds] == [engine.classes[i] for i in probs.argmax(1)]
    assert all(0 <= p.score <= 1 for p in preds)
    engine.add_examples("greeting", ["hi there"])
    engine.remove_class("card_lost")
    assert engine.classes == ["exchange_rate", "greeting"]
    assert engine.predict_proba(QUERIES).shape == (4, 2)


def test_description_and_examples_are_both_used(minilm):
    with_desc = FewShotEngine(encoder=minilm)
    without = FewShotEngine(encoder=minilm)
    for eng, desc in ((with_desc, "a question about a missing bank card"), (without, None)):
        eng.add_class("a", examples=["I lost my card"], description=desc)
        eng.add_class("b", examples=["what is the exchange rate"])
    assert not np.allclose(with_desc.predict_proba(QUERIES), without.predict_proba(QUERIES))


def test_bad_input_is_typed_and_changes_nothing(engine):
    before = snapshot(engine)
    cases = [
        (DuplicateClassError, lambda: engine.add_class("greeting", examples=["hi"])),
        (EmptyClassError, lambda: engine.add_class("empty")),
        (EmptyClassError, lambda: engine.add_class("empty", examples=[])),
        (UnknownClassError, lambda: engine.add_examples("nope", ["x"])),
        (UnknownClassError, lambda: engine.remove_class("nope")),
        (EmptyInputError, lambda: engine.predict([])),
        (InvalidInputError, lambda: engine.predict("a bare string")),
        (InvalidInputError, lambda: engine.add_class("bad", examples=["ok", 3])),
        (DimensionMismatchError, lambda: engine.add_class("v", vectors=np.ones((2, 5)))),
        (NonFiniteError, lambda: engine.add_class("v", vectors=np.full((1, engine.encoder.dim), np.nan))),
        (InvalidInputError, lambda: engine.predict(QUERIES, top_k=0)),
        (InvalidInputError, lambda: engine.add_class("", examples=["x"])),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
    after = snapshot(engine)
    assert before[:2] == after[:2]
    np.testing.assert_array_equal(before[2], after[2])
    np.testing.assert_allclose(before[3], after[3], atol=1e-6)


def test_empty_engine_errors(minilm):
    with pytest.raises(NotFittedError):
        FewShotEngine(encoder=minilm).predict(["hi"])


def test_save_load_in_fresh_process(engine, tmp_path):
    engine.save(tmp_path / "eng")
    expected = engine.predict_proba(QUERIES)
    code = ("import json, sys; from fewshot import FewShotEngine; "
            f"e = FewShotEngine.load({str(tmp_path / 'eng')!r}); "
            f"print(json.dumps({{'classes': e.classes, 'probs': e.predict_proba({QUERIES!r}).tolist()}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["classes"] == engine.classes
    np.testing.assert_allclose(result["probs"], expected, atol=1e-5)


def test_failed_save_keeps_previous(engine, tmp_path, monkeypatch):
    target = tmp_path / "eng"
    engine.save(target)
    expected = FewShotEngine.load(target, encoder=engine.encoder).predict_proba(QUERIES)
    engine.add_class("extra", examples=["totally different text"])

    def boom(self, directory):
        raise OSError("simulated crash while writing the index")

    monkeypatch.setattr(type(engine.index), "save", boom)
    with pytest.raises(OSError):
        engine.save(target)
    reloaded = FewShotEngine.load(target, encoder=engine.encoder)
    assert "extra" not in reloaded.classes
    np.testing.assert_allclose(reloaded.predict_proba(QUERIES), expected, atol=1e-6)


def test_corrupt_save_is_typed(engine, tmp_path):
    snap = engine.save(tmp_path / "eng")
    (snap / "engine.json").write_text("{}")
    with pytest.raises(CorruptIndexError):
        FewShotEngine.load(tmp_path / "eng")


def test_reject_marks_unknown_inputs(minilm):
    eng = FewShotEngine(encoder=minilm)
    eng.add_class("card", examples=["I lost my card", "my card was stolen", "card missing", "where is my card",
                                    "my bank card is gone", "someone took my card"])
    eng.add_class("rate", examples=["exchange rate please", "euro to dollar rate", "what rate do you give",
                                    "currency conversion rate", "how much is a pound in euros", "fx rate today"])
    support_texts = ["I lost my card", "euro to dollar rate"]
    assert all(p.label is not None for p in eng.predict(support_texts, reject=True))
    preds = eng.predict(["recipe for a chocolate cake with strawberries"], reject=True)
    assert preds[0].label is None and preds[0].top_k


def test_set_classifier_instance_refits_on_the_current_classes(engine):
    from fewshot.classifiers import PrototypeClassifier

    stale = PrototypeClassifier().fit(engine.index)
    engine.add_class("refund", examples=["I want my money back"])
    engine.set_classifier(stale)
    probs = engine.predict_proba(QUERIES)
    assert probs.shape == (len(QUERIES), 4) and engine.classes[-1] == "refund"


def test_application_metadata_is_saved_loaded_and_checked(tmp_path):
    from fewshot.errors import InvalidInputError
    from tests.fakes import FakeTextEncoder

    eng = FewShotEngine(encoder=FakeTextEncoder())
    eng.add_class("a", examples=["alpha"])
    assert eng.metadata == {}
    eng.metadata["journal"] = {"seq": 41, "names": ["x"]}
    eng.save(tmp_path / "eng")
    loaded = FewShotEngine.load(tmp_path / "eng", encoder=FakeTextEncoder())
    assert loaded.metadata == {"journal": {"seq": 41, "names": ["x"]}}
    loaded.metadata["journal"]["seq"] = 42
    loaded.save(tmp_path / "eng")
    files = {p: p.read_bytes() for p in (tmp_path / "eng").rglob("*") if p.is_file()}
    for bad in ({"x": object()}, {"x": float("nan")}, {1.5: "key"}):
        loaded.metadata = bad
        with pytest.raises(InvalidInputError, match="metadata"):
            loaded.save(tmp_path / "eng")
    assert {p: p.read_bytes() for p in (tmp_path / "eng").rglob("*") if p.is_file()} == files
    assert FewShotEngine.load(tmp_path / "eng", encoder=FakeTextEncoder()).metadata["journal"]["seq"] == 42


def test_a_description_only_engine_rejects_with_a_zero_shot_threshold_from_generic_text():
    """No examples, so no leave-one-out data: the engine gives the detector the shipped generic sentences embedded
    by its own encoder (computed once per encoder), and rejection is live instead of a silent no-op."""
    import warnings

    from fewshot.engine import lifecycle
    from tests.fakes import FakeTextEncoder

    encoder = FakeTextEncoder()
    eng = FewShotEngine(encoder=encoder)
    for name in ("refund", "lost card", "greeting"):
        eng.add_class(name, description=name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an UncalibratedRejectionWarning would fail here
        preds = eng.predict(["refund", "an unrelated sentence"], reject=True)
    assert eng.openset.threshold_source_ == "zero-shot" and np.isfinite(eng.openset.threshold_)
    assert len(preds) == 2
    assert encoder in lifecycle._BACKGROUND and lifecycle._BACKGROUND[encoder].shape[1] == encoder.dim


def test_an_engine_its_classifier_cannot_fit_yet_still_saves_and_loads(tmp_path, fake_text_encoder):
    """logreg over description-only classes cannot fit (found by tests/engine/test_state_machine.py): the save
    must not fail, and the loaded engine behaves as the saved one (NotFittedError at prediction, fine after an
    example arrives)."""
    eng = FewShotEngine(encoder=fake_text_encoder, classifier="logreg")
    eng.add_class("a", description="about a")
    eng.add_class("b", description="about b")
    with pytest.raises(NotFittedError):
        eng.predict(["x"])
    eng.save(tmp_path / "eng")
    loaded = FewShotEngine.load(tmp_path / "eng", encoder=fake_text_encoder)
    with pytest.raises(NotFittedError):
        loaded.predict(["x"])
    for e in (eng, loaded):
        e.add_examples("a", ["an a", "another a"])
        e.add_examples("b", ["a b", "another b"])
    assert [p.label for p in loaded.predict(["an a", "a b"])] == [p.label for p in eng.predict(["an a", "a b"])]
    loaded.save(tmp_path / "eng")
    again = FewShotEngine.load(tmp_path / "eng", encoder=fake_text_encoder)
    assert [p.label for p in again.predict(["an a", "a b"])] == [p.label for p in eng.predict(["an a", "a b"])]
