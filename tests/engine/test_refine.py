"""FewShotEngine.refine: auto rule, learned classifiers and the encoder fine-tune, each saved and reloaded."""
import numpy as np
import pytest

from fewshot import FewShotEngine
from fewshot.errors import InvalidInputError

CLASSES = {
    "card_lost": ["I lost my card", "my card was stolen", "card missing since yesterday", "where is my bank card"],
    "exchange_rate": ["what is the exchange rate", "euro to dollar rate", "how many euros for a pound",
                      "currency conversion rate today"],
    "refund": ["I want my money back", "please refund my purchase", "how do I get a refund", "return and refund"],
}
QUERIES = ["my card is gone", "dollar rate please", "money back for my order"]


def build(minilm, shots):
    eng = FewShotEngine(encoder=minilm)
    for name, texts in CLASSES.items():
        eng.add_class(name, examples=texts[:shots], description=name.replace("_", " "))
    return eng


def test_auto_rule_follows_the_label_count(minilm):
    described = FewShotEngine(encoder=minilm)
    described.add_class("card_lost", examples=CLASSES["card_lost"][:1], description="card lost")
    for name in ("exchange_rate", "refund"):
        described.add_class(name, description=name.replace("_", " "))
    assert described.refine("auto") == "linear"       # most classes described only
    one_shot = build(minilm, 1)
    assert one_shot.refine("auto") == "encoder" and one_shot.classifier_name == "linear"
    assert [p.label for p in one_shot.predict(QUERIES)] == ["card_lost", "exchange_rate", "refund"]


@pytest.mark.parametrize("method", ["fusion", "linear", "tip-adapter"])
def test_learned_classifier_saves_and_reloads(minilm, tmp_path, method):
    eng = build(minilm, 4)
    assert eng.refine(method) == method
    preds = eng.predict(QUERIES)
    assert [p.label for p in preds] == ["card_lost", "exchange_rate", "refund"]
    eng.save(tmp_path / "eng")
    reloaded = FewShotEngine.load(tmp_path / "eng", encoder=minilm)
    assert reloaded.classifier_name == method
    np.testing.assert_allclose(reloaded.predict_proba(QUERIES), eng.predict_proba(QUERIES), atol=1e-5)


def test_encoder_refine_rebuilds_the_index_and_is_saved(minilm, tmp_path):
    eng = build(minilm, 4)
    before = eng.index.prototypes().copy()
    assert eng.refine("encoder", max_epochs=1, default_epochs=1, patience=1, show_progress_bar=False) == "encoder"
    assert eng.classes == list(CLASSES) and len(eng.index) == 12
    probs = eng.predict_proba(QUERIES)
    eng.save(tmp_path / "eng")
    reloaded = FewShotEngine.load(tmp_path / "eng")
    assert reloaded.encoder.name.startswith("st:") and "snap-" in reloaded.encoder.name
    np.testing.assert_allclose(reloaded.predict_proba(QUERIES), probs, atol=1e-5)
    assert before.shape == eng.index.prototypes().shape


def test_refine_errors(minilm):
    eng = build(minilm, 2)
    with pytest.raises(InvalidInputError):
        eng.refine("nope")
    vec_only = FewShotEngine(encoder=minilm)
    vec_only.add_class("a", vectors=minilm.encode_text(["x", "y"]))
    vec_only.add_class("b", vectors=minilm.encode_text(["z", "w"]))
    with pytest.raises(InvalidInputError):
        vec_only.refine("encoder")


def test_encoder_refine_calibrates_open_set_on_examples_it_did_not_train_on(minilm, tmp_path, monkeypatch):
    import fewshot.engine.lifecycle as engine_module
    import fewshot.training.text_finetune as refine

    eng = build(minilm, 4)
    held_out = {t for texts in CLASSES.values() for t in texts[-2:]}

    def fake_finetune(texts, labels, class_names=None, base=None, **options):  # no training: the bookkeeping
        assert options["config"].refit is False  # the engine keeps the held-out part unseen
        return refine.EncoderRefineResult(encoder=type(minilm)(minilm.source), directory=minilm.source, epochs=1,
                                          trained_texts=frozenset(texts) - held_out)

    monkeypatch.setattr(refine, "finetune_encoder", fake_finetune)
    eng.refine("encoder", calibration_fraction=0.2)
    assert eng._unseen_by_encoder() is None  # 6 unseen < MIN_UNSEEN_FOR_CALIBRATION: calibrate on all
    monkeypatch.setattr(engine_module, "MIN_UNSEEN_FOR_CALIBRATION", 6)
    mask = eng._unseen_by_encoder()
    assert mask.sum() == 6 and [x for x, m in zip(sum(eng.raw_examples.values(), []), mask) if m] == \
        [t for texts in CLASSES.values() for t in texts[-2:]]
    calls = []
    real_folds = __import__("fewshot.openset.loo", fromlist=["loo_folds"]).loo_folds

    def spy(*args, **kwargs):
        calls.append(kwargs.get("only"))
        return real_folds(*args, **kwargs)

    monkeypatch.setattr("fewshot.openset.loo.loo_folds", spy)   # the folds the calibration and the detector share
    eng._changed()
    preds = eng.predict(QUERIES + ["what's the weather like in Lisbon tomorrow"], reject=True)
    assert calls and calls[-1] is not None and calls[-1].sum() == 6
    assert preds[-1].label is None and all(p.label is not None for p in preds[:3])  # rejection is live
    eng.save(tmp_path / "eng")
    reloaded = FewShotEngine.load(tmp_path / "eng")
    assert reloaded.encoder_seen_texts == eng.encoder_seen_texts
    np.testing.assert_array_equal(reloaded._unseen_by_encoder(), mask)
    assert FewShotEngine.load(tmp_path / "eng", encoder=minilm).encoder_seen_texts == frozenset()  # other encoder
    eng.refine("encoder", calibration_fraction=0.2)  # a second refine keeps what the first one trained on
    assert eng.encoder_seen_texts >= reloaded.encoder_seen_texts


def test_finetune_is_a_deprecated_name_of_tip_adapter(minilm):
    eng = build(minilm, 4)
    assert eng.refine("finetune") == "finetune"  # the name asked for
    assert eng.classifier_name == "tip-adapter"  # the classifier it names (Tip-Adapter-F, frozen encoder)
    assert [p.label for p in eng.predict(QUERIES)] == ["card_lost", "exchange_rate", "refund"]


SIX_PER_CLASS = {name: [f"{name} example number {i}" for i in range(6)] for name in ("alpha", "beta", "gamma")}


def six_per_class_engine(minilm):
    eng = FewShotEngine(encoder=minilm)
    for name, xs in SIX_PER_CLASS.items():
        eng.add_class(name, examples=xs)
    return eng


def record_finetunes(minilm, monkeypatch, selection_every: int | None = None) -> list[list[str]]:
    """Replace the fine-tune by bookkeeping only; returns the list the texts of each call are appended to.
    ``selection_every``: every n-th received text is reported as having picked the epoch count."""
    import fewshot.training.text_finetune as refine

    received = []

    def fake_finetune(xs, labels, class_names=None, base=None, **options):
        received.append(list(xs))
        selection = frozenset(xs[::selection_every]) if selection_every else frozenset()
        return refine.EncoderRefineResult(encoder=type(minilm)(minilm.source), directory=minilm.source, epochs=1,
                                          trained_texts=frozenset(xs) - selection, selection_texts=selection)

    monkeypatch.setattr(refine, "finetune_encoder", fake_finetune)
    return received


def test_encoder_refine_keeps_a_calibration_part_away_from_training_and_early_stopping(minilm, monkeypatch):
    import fewshot.engine.lifecycle as engine_module

    received = record_finetunes(minilm, monkeypatch, selection_every=4)
    eng = six_per_class_engine(minilm)
    eng.refine("encoder")  # by default nothing is kept away: every label trains
    assert len(received[-1]) == 18
    eng.refine("encoder", calibration_fraction=0.2)  # 2 per class = 6 < MIN_UNSEEN_FOR_CALIBRATION: none kept
    assert len(received[-1]) == 18 and eng._unseen_by_encoder() is None
    monkeypatch.setattr(engine_module, "MIN_UNSEEN_FOR_CALIBRATION", 6)
    eng = six_per_class_engine(minilm)
    eng.refine("encoder", seed=3, calibration_fraction=0.2)
    kept_away = set(sum(SIX_PER_CLASS.values(), [])) - set(received[-1])
    assert len(received[-1]) == 12 and len(kept_away) == 6
    assert all(sum(x in kept_away for x in xs) == 2 for xs in SIX_PER_CLASS.values())  # a fifth, rounded up
    assert len(eng.index) == 18                                                         # they still join the index
    mask = eng._unseen_by_encoder()
    assert [x for x, m in zip(sum(eng.raw_examples.values(), []), mask) if m] == \
        [x for x in sum(SIX_PER_CLASS.values(), []) if x in kept_away]   # selection texts are not unseen
    eng.refine("encoder", calibration_fraction=0.0)
    assert len(received[-1]) == 18
    for bad in (-0.1, 0.5, 1.0):
        with pytest.raises(InvalidInputError, match="calibration_fraction"):
            eng.refine("encoder", calibration_fraction=bad)


def test_a_second_encoder_refine_keeps_the_first_ones_calibration_part_unseen(minilm, monkeypatch):
    import fewshot.engine.lifecycle as engine_module

    monkeypatch.setattr(engine_module, "MIN_UNSEEN_FOR_CALIBRATION", 6)
    received = record_finetunes(minilm, monkeypatch)
    eng = six_per_class_engine(minilm)
    eng.refine("encoder", seed=0, calibration_fraction=0.2)
    first_kept_away = set(sum(SIX_PER_CLASS.values(), [])) - set(received[-1])
    for seed in (1, 2, 3):  # another seed would draw other examples if it could
        eng.refine("encoder", seed=seed, calibration_fraction=0.2)
        assert not set(received[-1]) & first_kept_away
    mask = eng._unseen_by_encoder()
    assert {x for x, m in zip(sum(eng.raw_examples.values(), []), mask) if m} == first_kept_away


def test_engines_saved_before_the_class_relative_default_keep_their_rejection(minilm, tmp_path):
    import json

    from fewshot.openset.detector import OpenSetDetector

    eng = build(minilm, 4)
    eng.save(tmp_path / "eng")
    meta_path = next((tmp_path / "eng").rglob("engine.json"))
    meta = json.loads(meta_path.read_text())
    default = OpenSetDetector().score
    assert meta["openset"]["score"] == default  # saved resolved, not as {}
    assert FewShotEngine.load(tmp_path / "eng", encoder=minilm).openset_config["score"] == default
    meta["openset"] = {}                                  # as older versions wrote it
    meta["encoder_trained_texts"] = ["I lost my card"]    # and the older key only
    del meta["encoder_seen_texts"]
    meta_path.write_text(json.dumps(meta))
    from fewshot.index.storage import MANIFEST, sha256_file  # re-seal the edited file, as an older version saved it
    manifest_path = meta_path.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["engine.json"] = {"sha256": sha256_file(meta_path), "bytes": meta_path.stat().st_size}
    manifest_path.write_text(json.dumps(manifest))
    old = FewShotEngine.load(tmp_path / "eng")
    assert old.openset_config["score"] == "max-score"
    assert old.encoder_seen_texts == frozenset({"I lost my card"})


def test_auto_refine_picks_a_method_that_applies_to_an_image_engine(fake_image_encoder):
    """With labelled examples 'auto' would fine-tune a text encoder; an image encoder cannot, so it takes the
    linear probe instead of raising."""
    from PIL import Image

    eng = FewShotEngine(encoder=fake_image_encoder)
    for c, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)]):
        eng.add_class(f"c{c}", examples=[Image.new("RGB", (8, 8), tuple(min(255, v + 3 * i) for v in colour))
                                         for i in range(5)])
    assert eng.refine("auto") == "linear" and eng.classifier_name == "linear"
    assert eng.predict([Image.new("RGB", (8, 8), (240, 20, 20))])[0].label == "c0"


def test_a_failed_refine_leaves_the_engine_on_its_fitted_classifier(fake_text_encoder):
    from fewshot.errors import NotFittedError

    eng = FewShotEngine(encoder=fake_text_encoder)
    eng.add_class("a", description="alpha things")
    eng.add_class("b", description="beta things")
    before = eng.predict(["alpha things"])
    with pytest.raises(InvalidInputError):
        eng.refine("linear", bogus=1)                  # a bad option: typed error
    with pytest.raises(NotFittedError):
        eng.refine("logreg")                           # the plain baseline needs examples; these classes have none
    assert eng.classifier_name == "prototype"
    assert eng.predict(["alpha things"]) == before


def test_a_loaded_fine_tuned_engine_can_be_saved_again_and_again(minilm, tmp_path, monkeypatch):
    """The tuned encoder lives inside the save's snapshot; a re-save must copy it into the new snapshot (the old
    one is deleted by that save), so every later load still finds it."""
    record_finetunes(minilm, monkeypatch)
    eng = six_per_class_engine(minilm)
    eng.refine("encoder")
    queries = ["alpha example number 2", "gamma example number 5"]
    expected = [p.label for p in eng.predict(queries)]
    eng.save(tmp_path / "eng")
    for round_ in range(2):
        loaded = FewShotEngine.load(tmp_path / "eng")
        assert [p.label for p in loaded.predict(queries)] == expected
        assert (tmp_path / "eng").exists()
        loaded.add_examples("beta", [f"beta extra {round_}"])
        loaded.save(tmp_path / "eng")  # deletes the snapshot the loaded encoder was read from
    assert FewShotEngine.load(tmp_path / "eng").index.example_counts().tolist() == [6, 8, 6]
