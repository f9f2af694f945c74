"""A weight-training refine runs outside the engine lock: the engine serves its old state meanwhile, what arrives
during training is embedded in the new space, and the swap is atomic (fewshot.engine.lifecycle.refine_and_swap)."""
import threading

import numpy as np
import pytest

from fewshot import FewShotEngine
from fewshot.engine import lifecycle
from fewshot.errors import InvalidInputError
from tests.fakes import FakeTextEncoder, l2_normalise


class ShiftedTextEncoder(FakeTextEncoder):
    """Another embedding space: the fake hash vectors with their coordinates reversed; counts encoded texts."""

    name = "fake-text+tuned"

    def __init__(self):
        self.encoded: list[str] = []

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        self.encoded += list(texts)
        return l2_normalise(super().encode_text(texts)[:, ::-1].copy())


CLASSES = {"alpha": ["alpha one", "alpha two", "alpha three", "alpha four"],
           "beta": ["beta one", "beta two", "beta three", "beta four"]}


def engine_with_classes():
    eng = FewShotEngine(encoder=FakeTextEncoder())
    for name, xs in CLASSES.items():
        eng.add_class(name, examples=xs, description=f"{name} things")
    return eng


@pytest.fixture
def gated_refiner(monkeypatch):
    """A refiner named 'gated' that waits for ``release`` before returning a ShiftedTextEncoder; ``started`` is set
    once it holds its snapshot (the engine lock is free by then)."""
    started, release, new_encoder, seen = threading.Event(), threading.Event(), ShiftedTextEncoder(), []

    def refiner(snapshot, **options):
        seen.append(snapshot)
        started.set()
        assert release.wait(30), "the test never released the refiner"
        if options.get("fail"):
            raise InvalidInputError("training failed")
        return lifecycle.RefinedEncoder(encoder=new_encoder, classifier="prototype",
                                        seen_texts=snapshot.seen_texts | {"alpha one"})

    monkeypatch.setitem(lifecycle.REFINERS, "gated", refiner)
    monkeypatch.setitem(lifecycle.REFINER_APPLIES, "gated", lambda snapshot: True)
    return started, release, new_encoder, seen


def run_in_thread(fn):
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as exc:  # re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def test_the_engine_serves_and_changes_while_a_refine_trains_then_swaps_in_the_new_space(gated_refiner):
    started, release, new_encoder, _ = gated_refiner
    eng = engine_with_classes()
    old_encoder, before = eng.encoder, eng.predict_proba(["alpha two", "beta one"])
    thread, box = run_in_thread(lambda: eng.refine("gated"))
    assert started.wait(30)
    # the lock is free: predictions answer from the old state, and classes and examples can be added
    np.testing.assert_allclose(eng.predict_proba(["alpha two", "beta one"]), before)
    eng.add_class("gamma", examples=["gamma one", "gamma two"], description="gamma things")
    eng.add_examples("alpha", ["alpha five"])
    assert eng.encoder is old_encoder
    release.set()
    thread.join(30)
    assert not thread.is_alive() and "error" not in box and box["result"] == "gated"
    encoded = list(new_encoder.encoded)
    assert eng.encoder is new_encoder and eng.classes == ["alpha", "beta", "gamma"]
    assert eng.index.example_counts().tolist() == [5, 4, 2]
    # every vector, the arrivals included, is the new encoder's: none from the old space reached the new index
    for name in eng.classes:
        np.testing.assert_allclose(eng.index.class_example_vectors(name),
                                   ShiftedTextEncoder().encode_text(eng.raw_examples[name]), atol=1e-6)
    np.testing.assert_allclose(eng.index.entry("gamma").prompt_vector, eng.describe_vector("gamma things"),
                               atol=1e-6)
    assert eng.encoder_seen_texts == frozenset({"alpha one"})
    # re-embedding after the arrivals encoded only them: every text and filled template exactly once
    prompts = [t.replace("{}", f"{name} things") for name in eng.classes for t in eng.templates]
    assert sorted(encoded) == sorted(sum(eng.raw_examples.values(), []) + prompts)


def test_a_refine_that_fails_while_training_leaves_the_engine_as_it_was(gated_refiner):
    _, release, _, _ = gated_refiner
    eng = engine_with_classes()
    old_encoder, old_index, before = eng.encoder, eng.index, eng.predict_proba(["alpha two"])
    release.set()
    with pytest.raises(InvalidInputError, match="training failed"):
        eng.refine("gated", fail=True)
    assert eng.encoder is old_encoder and eng.index is old_index and eng.classifier_name == "prototype"
    np.testing.assert_allclose(eng.predict_proba(["alpha two"]), before)


def test_vectors_without_text_added_during_training_stop_the_swap_with_a_typed_error(gated_refiner):
    started, release, _, _ = gated_refiner
    eng = engine_with_classes()
    old_encoder = eng.encoder
    thread, box = run_in_thread(lambda: eng.refine("gated"))
    assert started.wait(30)
    eng.add_vectors("alpha", FakeTextEncoder().encode_text(["a vector with no text"]))
    release.set()
    thread.join(30)
    assert isinstance(box.get("error"), InvalidInputError) and "text" in str(box["error"])
    assert eng.encoder is old_encoder and eng.index.example_counts().tolist() == [5, 4]


def test_an_embedding_computed_just_before_a_swap_is_redone_with_the_new_encoder():
    eng = engine_with_classes()
    new_encoder = ShiftedTextEncoder()
    calls = []

    def embed(encoder):  # the first call races with a refine that swaps the encoder right after it
        calls.append(encoder)
        if len(calls) == 1:
            eng.encoder = new_encoder
        return encoder.encode_text(["alpha six"])

    with lifecycle.embedded_by_current_encoder(eng, embed) as vectors:
        assert eng._lock._is_owned()
    assert calls[0] is not new_encoder and calls[1] is new_encoder
    np.testing.assert_allclose(vectors, new_encoder.encode_text(["alpha six"]))


def test_embedding_keeps_trying_then_finishes_under_the_lock():
    eng = engine_with_classes()
    calls = []

    def embed(encoder):  # every call outside the lock sees the encoder swapped under it
        calls.append(eng._lock._is_owned())
        if not eng._lock._is_owned():
            eng.encoder = ShiftedTextEncoder()
        return encoder.name

    with lifecycle.embedded_by_current_encoder(eng, embed):
        pass
    assert calls == [False] * (lifecycle.SWAP_ATTEMPTS - 1) + [True]
    assert not eng._lock._is_owned()


def test_embed_support_encodes_only_texts_it_has_not_seen():
    eng = engine_with_classes()
    encoder = ShiftedTextEncoder()
    cache: dict = {}
    with eng._lock:
        snapshot = lifecycle.take_snapshot(eng)
    index = lifecycle.embed_support(encoder, snapshot, cache)
    assert index.classes == ["alpha", "beta"] and len(encoder.encoded) == 8 + 2 * len(eng.templates)
    eng.add_examples("beta", ["beta five"])
    with eng._lock:
        lifecycle.embed_support(encoder, lifecycle.take_snapshot(eng), cache)
    assert encoder.encoded[8 + 2 * len(eng.templates):] == ["beta five"]
