import numpy as np
import pytest

from fewshot.classifiers import ArraySupport
from fewshot.classifiers.base import softmax
from fewshot.index import SupportIndex
from fewshot.openset import OpenSetDetector, fit_temperature, loo_scores
from tests.conftest import unit_rows


def clustered(rng, n_classes=8, per_class=12, dim=24, spread=0.6):
    centres = unit_rows(rng.normal(size=(n_classes, dim)))
    vectors = unit_rows(np.repeat(centres, per_class, 0) + spread * rng.normal(size=(n_classes * per_class, dim))
                        / np.sqrt(dim))
    return centres, vectors, np.repeat(np.arange(n_classes), per_class)


def index_from(vectors, labels):
    index = SupportIndex(vectors.shape[1])
    for c in np.unique(labels):
        index.add_class(f"c{c}")
        index.add_vectors(f"c{c}", vectors[labels == c])
    return index


def test_loo_scores_never_see_the_held_out_example(rng):
    _, vectors, labels = clustered(rng)
    scores, truth = loo_scores(ArraySupport(vectors, labels, 8), "prototype")
    assert scores.shape == (len(labels), 8) and len(truth) == len(labels)
    # with the example itself inside its prototype the cosine would be higher; LOO must be lower for each
    full = ArraySupport(vectors, labels, 8).prototypes()
    full = unit_rows(full)
    assert scores[np.arange(len(truth)), truth].mean() < 0.999 * (vectors @ full.T)[np.arange(96), labels].mean()


def test_fit_temperature_recovers_a_known_scale(rng):
    scores = rng.uniform(-1, 1, size=(4000, 5)).astype(np.float32)
    p = softmax(scores * 7.0)
    labels = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(scores, labels) == pytest.approx(7.0, rel=0.15)


@pytest.mark.parametrize("score", ["max-score", "msp", "energy"])
@pytest.mark.parametrize("per_class", [False, True])
def test_thresholds_are_monotone_in_keep(rng, score, per_class):
    _, vectors, labels = clustered(rng)
    support = ArraySupport(vectors, labels, 8)
    thresholds = []
    for keep in (0.5, 0.8, 0.9, 0.95, 0.99):
        det = OpenSetDetector(score=score, keep=keep, per_class=per_class).fit(support)
        thresholds.append(det.class_thresholds_ if per_class else np.array([det.threshold_]))
    for a, b in zip(thresholds, thresholds[1:]):
        assert (b <= a + 1e-9).all()


@pytest.mark.parametrize("target", ["coverage", "accuracy", "drop"])
def test_support_examples_are_never_rejected_and_far_inputs_are(rng, target):
    centres, vectors, labels = clustered(rng)
    index = index_from(vectors, labels)
    from fewshot.classifiers import PrototypeClassifier
    det = OpenSetDetector(keep=0.5, target=target).fit(index)
    clf = PrototypeClassifier().fit(index)
    assert det.accept(clf.scores(vectors), vectors).all()
    far = unit_rows(rng.normal(size=(50, 24)))
    assert det.accept(clf.scores(far), far).mean() < 0.2
    near = unit_rows(centres + 0.3 * rng.normal(size=centres.shape) / np.sqrt(24))
    assert det.accept(clf.scores(near), near).mean() > 0.8


def test_too_few_examples_means_no_rejection():
    vectors = unit_rows(np.eye(4)[:2])
    det = OpenSetDetector().fit(ArraySupport(vectors, np.array([0, 1]), 2))
    assert det.threshold_ == -np.inf


def test_bad_arguments():
    with pytest.raises(ValueError):
        OpenSetDetector(score="nope")
    with pytest.raises(ValueError):
        OpenSetDetector(keep=0)
    with pytest.raises(ValueError):
        OpenSetDetector(target="x")


def test_loo_scores_only_scores_the_masked_examples(rng):
    _, vectors, labels = clustered(rng)
    only = np.zeros(len(labels), bool)
    only[::3] = True
    scores, truth = loo_scores(ArraySupport(vectors, labels, 8), "prototype", only=only)
    assert len(truth) == only.sum() and sorted(truth.tolist()) == sorted(labels[only].tolist())
    with pytest.raises(ValueError, match="mask"):
        loo_scores(ArraySupport(vectors, labels, 8), "prototype", only=only[:-1])


def test_drop_target_bounds_the_loo_accuracy_loss_and_is_monotone(rng):
    _, vectors, labels = clustered(rng)
    vectors = unit_rows(vectors + 0.35 * rng.normal(size=vectors.shape))  # some LOO mistakes
    support = ArraySupport(vectors, labels, 8)
    scores, truth = loo_scores(support, "prototype")
    correct = scores.argmax(1) == truth
    assert 0 < correct.mean() < 1
    previous = np.inf
    for keep in (0.8, 0.9, 0.95, 0.98, 1.0):
        det = OpenSetDetector(keep=keep, target="drop").fit(support)
        lost = (correct & (scores.max(1) < det.threshold_)).mean()
        assert lost <= (1 - keep) + 1e-9, (keep, lost)
        assert det.threshold_ <= previous + 1e-9
        previous = det.threshold_
    assert (correct & (scores.max(1) < OpenSetDetector(keep=0.8, target="drop").fit(support).threshold_)).mean() \
        > 0.1  # a loose budget is actually spent, not ignored
