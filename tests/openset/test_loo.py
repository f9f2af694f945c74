import numpy as np
import pytest

from fewshot.classifiers import ArraySupport, make_classifier
from fewshot.classifiers.base import Classifier
from fewshot.index.support_index import SupportIndex
from fewshot.openset.loo import HeldOut, loo_folds
from tests.fakes import unit_rows


def uneven_support(rng, with_texts=True):
    """12 classes of 1 to 9 examples (a class of one cannot be held out), some with a description vector."""
    counts = [1, 2, 3, 5, 8, 1, 4, 4, 6, 2, 3, 9]
    labels = np.repeat(np.arange(len(counts)), counts)
    vectors = unit_rows(rng.normal(size=(len(labels), 32)))
    texts = unit_rows(rng.normal(size=(len(counts), 32)))
    mask = rng.random(len(counts)) < 0.6 if with_texts else np.zeros(len(counts), bool)
    return ArraySupport(vectors, labels, len(counts), texts, mask)


@pytest.mark.parametrize("name, config", [("prototype", {}), ("prototype", {"prior_weight": 2.5}),
                                          ("simpleshot", {}), ("prototype", {"center": True, "prior_weight": 0.0})])
@pytest.mark.parametrize("with_texts", [True, False])
def test_the_prototype_closed_form_gives_the_scores_of_refits(rng, name, config, with_texts):
    support = uneven_support(rng, with_texts)
    classifier = make_classifier(name, **config)
    folds = loo_folds(support, seed=3)
    closed = np.concatenate(classifier.held_out_scores(support, folds))
    refits = np.concatenate(Classifier.held_out_scores(classifier, support, folds))  # one clone fitted per fold
    np.testing.assert_allclose(closed, refits, atol=1e-5)


def test_the_closed_form_also_holds_for_folds_that_leave_out_more_than_they_score(rng):
    support = uneven_support(rng)
    vectors, labels = support.examples()
    rest = np.ones(len(labels), bool)
    rest[[3, 7, 20]] = False            # left out, but only two of them scored
    folds = [(np.array([7, 20]), rest)]
    classifier = make_classifier("prototype")
    np.testing.assert_allclose(classifier.held_out_scores(support, folds)[0],
                               Classifier.held_out_scores(classifier, support, folds)[0], atol=1e-5)


def test_a_subclass_that_changes_the_fit_gets_the_refits(rng):
    from fewshot.classifiers.prototype import PrototypeClassifier

    class Shifted(PrototypeClassifier):
        def _fit(self, support):
            super()._fit(support)
            self.prototypes_ = np.roll(self.prototypes_, 1, axis=0)

    support = uneven_support(rng)
    folds = loo_folds(support, seed=1)
    classifier = Shifted()
    np.testing.assert_array_equal(np.concatenate(classifier.held_out_scores(support, folds)),
                                  np.concatenate(Classifier.held_out_scores(classifier, support, folds)))


def test_held_out_scores_come_from_folds_that_never_saw_them(rng):
    support = uneven_support(rng)
    held = HeldOut.fit(support, "prototype", seed=2)
    vectors, labels = support.examples()
    for block, rest in held.folds:
        assert not rest[block].any()
    np.testing.assert_array_equal(held.truth, labels[held.index])
    assert len(held.scores) == len(held.index) == sum(len(b) for b, _ in held.folds)


def test_an_index_and_its_arrays_give_the_same_held_out_scores(rng):
    support = uneven_support(rng, with_texts=False)
    vectors, labels = support.examples()
    index = SupportIndex(32)
    for c in range(support.n_classes):
        index.add_class(f"c{c}")
        index.add_vectors(f"c{c}", vectors[labels == c])
    a = HeldOut.fit(index, "prototype", seed=0)
    b = HeldOut.fit(support, "prototype", seed=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


@pytest.mark.parametrize("center", [False, True])
def test_a_described_class_left_out_whole_scores_as_a_refit_does(rng, center):
    """A class with a description may lose every example to one block; with prior_weight 0 its fold prototype is
    then exactly zero (a rounding residual of the class sums would normalise into a random direction)."""
    labels = np.repeat(np.arange(4), [5, 4, 3, 5])
    vectors = unit_rows(rng.normal(size=(len(labels), 32)))
    support = ArraySupport(vectors, labels, 4, unit_rows(rng.normal(size=(4, 32))), np.array([True, False, False,
                                                                                            False]))
    for trial in range(20):
        rest = np.ones(len(labels), bool)
        block = np.r_[np.flatnonzero(labels == 0), rng.choice(np.flatnonzero(labels != 0), 2, replace=False)]
        rest[block] = False
        folds = [(rng.permutation(block), rest)]
        classifier = make_classifier("prototype", prior_weight=0.0, center=center)
        np.testing.assert_allclose(classifier.held_out_scores(support, folds)[0],
                                   Classifier.held_out_scores(classifier, support, folds)[0], atol=1e-5)


def test_held_out_arrays_are_read_only(rng):
    held = HeldOut.fit(uneven_support(rng), "prototype")
    assert not any(a.flags.writeable for a in (held.scores, held.truth, held.index))
