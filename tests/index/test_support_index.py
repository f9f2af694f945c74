import numpy as np
import pytest

from fewshot.errors import (
    CorruptIndexError,
    DimensionMismatchError,
    DuplicateClassError,
    NonFiniteError,
    UnknownClassError,
    VersionMismatchError,
)
from fewshot.index.support_index import SupportIndex
from tests.fakes import unit_rows


def build(index_type="flat", seed=0, n_classes=6, per_class=7, dim=16):
    rng = np.random.default_rng(seed)
    index = SupportIndex(dim, index_type=index_type)
    data = {}
    for c in range(n_classes):
        v = unit_rows(rng.normal(size=(per_class, dim)))
        index.add_class(f"c{c}")
        data[f"c{c}"] = (index.add_vectors(f"c{c}", v), v)
    return index, data


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_search_matches_brute_force(index_type):
    index, data = build(index_type)
    vectors = np.concatenate([v for _, v in data.values()])
    labels = np.concatenate([[c] * len(v) for c, (_, v) in enumerate(data.values())])
    queries = unit_rows(np.random.default_rng(1).normal(size=(20, 16)))
    sims, classes = index.search(queries, 5)
    ref = queries @ vectors.T
    order = np.argsort(-ref, axis=1)[:, :5]
    np.testing.assert_allclose(sims, np.take_along_axis(ref, order, 1), atol=1e-5)
    np.testing.assert_array_equal(classes, labels[order])


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_remove_examples_and_classes_updates_prototypes_and_search(index_type):
    index, data = build(index_type)
    ids, v = data["c2"]
    index.remove_ids(ids[:3])
    np.testing.assert_allclose(index.prototypes()[2], v[3:].mean(0), atol=1e-6)
    assert index.example_counts()[2] == 4
    _, classes = index.search(v[:3], 50)
    # removed vectors never come back: each query now finds at most 4 c2 examples
    assert ((classes == 2).sum(axis=1) <= 4).all()
    index.remove_class("c0")
    assert index.classes == ["c1", "c2", "c3", "c4", "c5"]
    assert len(index) == 5 * 7 - 3
    _, classes = index.search(data["c0"][1][:1], 50)
    assert classes.max() <= 4 and (classes >= 0).sum() == len(index)


def test_add_without_rebuild_keeps_ids_stable():
    index, data = build()
    faiss_obj = index.faiss_index
    index.add_class("new")
    new_ids = index.add_vectors("new", unit_rows(np.ones((2, 16))))
    assert index.faiss_index is faiss_obj
    assert set(new_ids).isdisjoint(np.concatenate([i for i, _ in data.values()]))
    np.testing.assert_allclose(index.reconstruct(data["c1"][0]), data["c1"][1], atol=1e-7)


def test_bad_input_is_typed_and_leaves_index_unchanged():
    index, _ = build()
    before = (index.classes, len(index), index.prototypes().copy())
    with pytest.raises(DuplicateClassError):
        index.add_class("c1")
    with pytest.raises(UnknownClassError):
        index.add_vectors("nope", np.ones((1, 16)))
    with pytest.raises(DimensionMismatchError):
        index.add_vectors("c1", np.ones((1, 15)))
    bad = np.ones((2, 16))
    bad[1, 3] = np.nan
    with pytest.raises(NonFiniteError):
        index.add_vectors("c1", bad)
    assert (index.classes, len(index)) == before[:2]
    np.testing.assert_array_equal(index.prototypes(), before[2])


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_save_load_roundtrip(tmp_path, index_type):
    index, data = build(index_type)
    index.remove_ids(data["c3"][0][:2])
    index.set_prompt_vector("c4", unit_rows(np.ones((1, 16)))[0])
    index.save(tmp_path)
    loaded = SupportIndex.load(tmp_path)
    assert loaded.classes == index.classes and len(loaded) == len(index)
    np.testing.assert_allclose(loaded.prototypes(), index.prototypes(), atol=1e-6)
    cv, mask = loaded.class_vectors()
    assert mask.tolist() == [False] * 4 + [True, False]
    q = unit_rows(np.random.default_rng(3).normal(size=(5, 16)))
    np.testing.assert_array_equal(loaded.search(q, 4)[1], index.search(q, 4)[1])
    # ids continue after reload
    loaded.add_class("z")
    assert loaded.add_vectors("z", q[:1])[0] == index._next_id


def test_load_rejects_version_and_corruption(tmp_path):
    index, _ = build()
    index.save(tmp_path)
    table = (tmp_path / "classes.json").read_text()
    (tmp_path / "classes.json").write_text(table.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(VersionMismatchError):
        SupportIndex.load(tmp_path)
    (tmp_path / "classes.json").write_text(table)
    (tmp_path / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(CorruptIndexError):
        SupportIndex.load(tmp_path)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_examples_stay_what_faiss_holds_through_any_changes(index_type):
    """``examples()`` is cached and updated in place on add / remove: after every step it equals reading every
    vector back from FAISS, and the arrays it hands out cannot be written to."""
    rng = np.random.default_rng(5)
    index, _ = build(index_type, n_classes=4, per_class=3)

    def read_back():
        ids = [i for n in index.classes for i in index.entry(n).ids]
        labels = np.array([c for c, n in enumerate(index.classes) for _ in index.entry(n).ids], np.int64)
        return index.reconstruct(ids), labels

    index.examples()
    for step in range(60):
        action = rng.integers(0, 4)
        if action == 0 or index.n_classes < 2:
            name = f"new{step}"
            index.add_class(name)
            if rng.random() < 0.7:
                index.add_vectors(name, unit_rows(rng.normal(size=(int(rng.integers(1, 4)), 16))))
        elif action == 1:
            index.add_vectors(str(rng.choice(index.classes)), unit_rows(rng.normal(size=(2, 16))))
        elif action == 2:
            index.remove_class(str(rng.choice(index.classes)))
        else:
            ids = [i for n in index.classes for i in index.entry(n).ids]
            if len(ids) > 1:
                index.remove_ids([int(rng.choice(ids))])
        vectors, labels = index.examples()
        expected_vectors, expected_labels = read_back()
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(vectors, expected_vectors)
        assert not vectors.flags.writeable and not labels.flags.writeable
