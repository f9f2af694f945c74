"""``FewShotEngine.predict_arrays`` / ``BatchPrediction``: the numbers of ``predict_vectors`` as read-only arrays."""
import numpy as np
import pytest

from fewshot import BatchPrediction, FewShotEngine
from fewshot.errors import InvalidInputError, NotFittedError
from tests.fakes import FakeTextEncoder, unit


@pytest.fixture
def engine():
    rng = np.random.default_rng(3)
    centres = unit(rng, 6)
    eng = FewShotEngine(encoder=FakeTextEncoder())
    for c, centre in enumerate(centres):
        eng.add_class(f"class_{c}", vectors=centre + 0.3 * unit(rng, 8))
    queries = np.concatenate([centres + 0.3 * unit(rng, 6), unit(rng, 30)])   # near the classes, then anywhere
    return eng, queries.astype(np.float32)


@pytest.mark.parametrize("top_k,reject", [(1, False), (3, False), (3, True), (6, True), (9, False)])
def test_arrays_hold_the_same_results_as_the_prediction_objects(engine, top_k, reject):
    eng, queries = engine
    batch = eng.predict_arrays(queries, top_k=top_k, reject=reject)
    preds = eng.predict_vectors(queries, top_k=top_k, reject=reject)
    assert isinstance(batch, BatchPrediction) and len(batch) == len(preds) == len(queries)
    assert batch.classes == tuple(eng.classes)
    assert batch.top_k_index.shape == batch.top_k_score.shape == (len(queries), min(top_k, 6))
    assert list(batch.labels) == [p.label for p in preds]
    assert batch.scores.tolist() == [p.score for p in preds]
    assert [[(batch.classes[i], s) for i, s in zip(row, values)]
            for row, values in zip(batch.top_k_index.tolist(), batch.top_k_score.tolist())] == [p.top_k for p in preds]
    assert batch.top_k_labels.tolist() == [[label for label, _ in p.top_k] for p in preds]
    assert batch.predictions() == preds
    # ranked as the classifier scores rank (computed apart from the prediction path)
    assert (batch.top_k_index[:, 0] == eng.scores_from_vectors(queries).argmax(1)).all()


def test_rejected_inputs_have_no_label_and_index_minus_one(engine):
    eng, queries = engine
    batch = eng.predict_arrays(queries, reject=True)
    assert not batch.accepted.all(), "random directions should include some the engine rejects"
    rejected = ~batch.accepted
    assert all(label is None for label in batch.labels[rejected])
    assert (batch.label_index[rejected] == -1).all()
    assert (batch.label_index[batch.accepted] == batch.top_k_index[batch.accepted, 0]).all()
    # the top label and its score are still reported for rejected inputs, as Prediction.top_k does
    assert (batch.top_k_index[rejected, 0] >= 0).all() and np.isfinite(batch.scores[rejected]).all()


def test_the_arrays_are_read_only(engine):
    eng, queries = engine
    batch = eng.predict_arrays(queries, top_k=2)
    for array in (batch.top_k_index, batch.top_k_score, batch.accepted):
        with pytest.raises(ValueError):
            array[0] = 0


def test_a_batch_keeps_the_classes_it_was_predicted_with(engine):
    eng, queries = engine
    batch = eng.predict_arrays(queries[:3])
    before = list(batch.labels)
    eng.remove_class("class_0")
    eng.add_class("class_new", vectors=queries[:2])
    assert list(batch.labels) == before and "class_0" in batch.classes and "class_new" not in batch.classes


def test_bad_input_raises_a_typed_error(engine):
    eng, queries = engine
    for top_k in (0, -1, "2", 1.5, True):
        with pytest.raises(InvalidInputError):
            eng.predict_arrays(queries, top_k=top_k)
    for bad in ("text", [[1.0, "x"]], np.ones((2, 5), np.float32), np.full((1, 16), np.nan, np.float32)):
        with pytest.raises(InvalidInputError):
            eng.predict_arrays(bad)
    with pytest.raises(NotFittedError):
        FewShotEngine(encoder=FakeTextEncoder()).predict_arrays(queries)
