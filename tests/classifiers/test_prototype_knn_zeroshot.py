"""Training-free classifiers against numpy references."""
import numpy as np
import pytest

from fewshot.classifiers import (
    ArraySupport,
    KNNClassifier,
    PrototypeClassifier,
    SimpleShotClassifier,
    ZeroShotClassifier,
    make_classifier,
)
from fewshot.errors import DimensionMismatchError, InvalidInputError, NotFittedError
from fewshot.index.support_index import SupportIndex
from tests.fakes import unit_rows


@pytest.fixture
def support(rng):
    vectors = unit_rows(rng.normal(size=(30, 12)))
    labels = np.repeat(np.arange(5), 6)
    class_vectors = unit_rows(rng.normal(size=(5, 12)))
    return vectors, labels, class_vectors


def test_prototype_matches_reference(support, rng):
    vectors, labels, _ = support
    queries = unit_rows(rng.normal(size=(9, 12)))
    scores = PrototypeClassifier().fit(ArraySupport(vectors, labels, 5)).scores(queries)
    protos = unit_rows(np.stack([vectors[labels == c].mean(0) for c in range(5)]))
    np.testing.assert_allclose(scores, queries @ protos.T, atol=1e-5)
    probs = PrototypeClassifier().fit(ArraySupport(vectors, labels, 5)).predict_proba(queries)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_prompt_vector_counts_as_prior_examples(support, rng):
    vectors, labels, class_vectors = support
    queries = unit_rows(rng.normal(size=(4, 12)))
    clf = PrototypeClassifier(prior_weight=2.0).fit(ArraySupport(vectors, labels, 5, class_vectors))
    protos = unit_rows(np.stack([(vectors[labels == c].sum(0) + 2 * class_vectors[c]) / 8 for c in range(5)]))
    np.testing.assert_allclose(clf.scores(queries), queries @ protos.T, atol=1e-5)
    # a class with no examples is classified from its prompt vector alone
    only_prompt = ArraySupport(np.zeros((0, 12)), np.zeros(0, np.int64), 5, class_vectors)
    np.testing.assert_allclose(PrototypeClassifier().fit(only_prompt).scores(queries),
                               queries @ class_vectors.T, atol=1e-5)


def test_simpleshot_centres_on_support_mean(support, rng):
    vectors, labels, _ = support
    queries = unit_rows(rng.normal(size=(6, 12)))
    mean = vectors.mean(0)
    protos = unit_rows(np.stack([vectors[labels == c].mean(0) for c in range(5)]) - mean)
    ref = unit_rows(queries - mean) @ protos.T
    np.testing.assert_allclose(SimpleShotClassifier().fit(ArraySupport(vectors, labels, 5)).scores(queries),
                               ref, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_matches_reference_on_array_and_faiss(support, rng, k):
    vectors, labels, _ = support
    queries = unit_rows(rng.normal(size=(8, 12)))
    index = SupportIndex(12)
    for c in range(5):
        index.add_class(str(c))
        index.add_vectors(str(c), vectors[labels == c])
    a = KNNClassifier(k).fit(ArraySupport(vectors, labels, 5)).scores(queries)
    b = KNNClassifier(k).fit(index).scores(queries)
    np.testing.assert_allclose(a, b, atol=1e-5)
    sims = queries @ vectors.T
    for i in range(len(queries)):
        top = np.argsort(-sims[i])[:k]
        for c in set(labels[top]):
            assert a[i, c] == pytest.approx(max(sims[i, j] for j in top if labels[j] == c), abs=1e-5)
        assert a[i].argmax() == labels[top[0]]


def test_zero_shot_uses_class_vectors_only(support, rng):
    vectors, labels, class_vectors = support
    mask = np.array([True, True, False, True, True])
    queries = unit_rows(rng.normal(size=(5, 12)))
    scores = ZeroShotClassifier().fit(ArraySupport(vectors, labels, 5, class_vectors, mask)).scores(queries)
    ref = queries @ class_vectors.T
    ref[:, 2] = -1
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    with pytest.raises(NotFittedError):
        ZeroShotClassifier().fit(ArraySupport(vectors, labels, 5))


def test_errors(support):
    vectors, labels, _ = support
    clf = make_classifier("prototype")
    with pytest.raises(NotFittedError):
        clf.scores(vectors)
    clf.fit(ArraySupport(vectors, labels, 5))
    with pytest.raises(DimensionMismatchError):
        clf.scores(np.ones((2, 5)))
    with pytest.raises(InvalidInputError):
        make_classifier("nope")
