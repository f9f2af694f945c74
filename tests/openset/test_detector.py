import numpy as np
import pytest

from fewshot._core import softmax
from fewshot.classifiers import ArraySupport
from fewshot.index.support_index import SupportIndex
from fewshot.openset.detector import OOD_SCORES, OpenSetDetector, class_offsets, fit_temperature, loo_folds, loo_scores
from fewshot.openset.mahalanobis import RelativeMahalanobis
from tests.fakes import unit_rows


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


@pytest.mark.parametrize("score", OOD_SCORES)
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


def test_a_fold_that_would_leave_nothing_to_fit_on_is_not_made(rng):
    # one described class with one example: holding the example out leaves no example, which logreg cannot fit
    # (found by tests/engine/test_state_machine.py: predict(reject=True) raised NotFittedError)
    vector = unit_rows(rng.normal(size=(1, 8))).astype(np.float32)
    support = ArraySupport(vector, np.array([0]), 1, vector, np.array([True]))
    assert loo_folds(support) == []
    scores, truth = loo_scores(support, "logreg")
    assert scores.shape == (0, 1) and len(truth) == 0


@pytest.mark.parametrize("score", ["max-score", "class-relative", "mahalanobis", "class-relative+mahalanobis"])
def test_drop_target_bounds_the_loo_accuracy_loss_and_is_monotone(rng, score):
    _, vectors, labels = clustered(rng)
    vectors = unit_rows(vectors + 0.35 * rng.normal(size=vectors.shape))  # some LOO mistakes
    support = ArraySupport(vectors, labels, 8)
    scores, truth = loo_scores(support, "prototype")
    correct = scores.argmax(1) == truth
    index = np.concatenate([block for block, _ in loo_folds(support)])    # the same folds, in the same order
    held_out = RelativeMahalanobis().fit(vectors, labels, 8).leave_one_out_scores(vectors[index], labels[index])
    at_prediction, nearest = held_out[np.arange(len(index)), scores.argmax(1)], held_out.max(1)

    def loo_ood(det):  # the LOO scores the threshold was chosen on (own class offset without the example)
        if score == "max-score":
            return scores.max(1)
        if score == "mahalanobis":
            return at_prediction
        relative = class_offsets(scores.max(1), scores.argmax(1), truth, 8, det.shrinkage)[1]
        if score == "class-relative":
            return relative
        return relative / relative[correct].std() + nearest / nearest[correct].std()

    assert 0 < correct.mean() < 1
    previous = np.inf
    for keep in (0.8, 0.9, 0.95, 0.98, 1.0):
        det = OpenSetDetector(score=score, keep=keep, target="drop").fit(support)
        lost = (correct & (loo_ood(det) < det.threshold_)).mean()
        assert lost <= (1 - keep) + 1e-9, (keep, lost)
        assert det.threshold_ <= previous + 1e-9
        previous = det.threshold_
    det = OpenSetDetector(score=score, keep=0.8, target="drop").fit(support)
    assert (correct & (loo_ood(det) < det.threshold_)).mean() > 0.1  # a loose budget is spent, not ignored


def test_class_offsets_match_a_direct_computation_and_leave_each_example_out(rng):
    top = rng.uniform(0.3, 0.9, size=40)
    truth = rng.integers(0, 4, size=40)
    predicted = np.where(rng.random(40) < 0.8, truth, (truth + 1) % 4)
    correct = predicted == truth
    shrink = 3.0
    offsets, loo = class_offsets(top, predicted, truth, 5, shrink)
    mean = top[correct].mean()
    for c in range(5):
        own = top[correct & (predicted == c)]
        assert offsets[c] == pytest.approx((own.sum() + shrink * mean) / (len(own) + shrink) - mean)
    assert offsets[4] == 0.0  # no example predicted as class 4: no offset
    for i in range(40):
        others = correct & (predicted == predicted[i])
        others[i] = False
        expected = (top[others].sum() + shrink * mean) / (others.sum() + shrink) - mean
        assert loo[i] == pytest.approx(top[i] - expected)


def test_class_relative_score_separates_inputs_near_tight_classes_better_than_one_cosine(rng):
    """Half the classes are tight, half loose. Out-of-scope inputs sit just outside the tight classes, where a
    cosine that is normal for a loose class is abnormally low for a tight one."""
    from sklearn.metrics import roc_auc_score

    from fewshot.classifiers import PrototypeClassifier

    dim, n_classes = 32, 10
    centres = unit_rows(rng.normal(size=(n_classes, dim)))
    spread = np.where(np.arange(n_classes) < 5, 0.25, 1.1)       # classes 0-4 tight, 5-9 loose

    def draw(classes, extra=1.0):
        noise = rng.normal(size=(len(classes), dim)) / np.sqrt(dim)
        return unit_rows(centres[classes] + (spread[classes] * extra)[:, None] * noise)

    labels = np.repeat(np.arange(n_classes), 10)
    support = ArraySupport(draw(labels), labels, n_classes)
    test_classes = np.repeat(np.arange(n_classes), 30)
    in_scope = draw(test_classes)
    out_scope = draw(np.repeat(np.arange(5), 30), extra=4.0)     # beyond the tight classes' own spread
    clf = PrototypeClassifier().fit(support)
    scores = clf.scores(np.concatenate([in_scope, out_scope]))
    truth = np.r_[np.ones(len(in_scope)), np.zeros(len(out_scope))]
    auroc = {s: roc_auc_score(truth, OpenSetDetector(score=s).fit(support).ood_scores(scores))
             for s in ("max-score", "class-relative")}
    assert auroc["class-relative"] > auroc["max-score"] + 0.05, auroc



@pytest.mark.parametrize("score", ["class-relative", "class-relative+mahalanobis", "mahalanobis"])
def test_class_relative_confidence_ranks_inputs_as_rejection_does(rng, score):
    from fewshot.classifiers import PrototypeClassifier

    _, vectors, labels = clustered(rng)
    vectors = unit_rows(vectors + 0.35 * rng.normal(size=vectors.shape))  # some LOO mistakes: Platt can be fitted
    support = ArraySupport(vectors, labels, 8)
    det = OpenSetDetector(score=score).fit(support)
    assert det.platt_ is not None and (score == "mahalanobis" or np.abs(det.class_offsets_).max() > 0)
    queries = unit_rows(rng.normal(size=(300, 24)) + vectors[rng.integers(0, len(vectors), 300)] * 3)
    scores = PrototypeClassifier().fit(support).scores(queries)
    top_confidence = det.confidences(scores, queries)[np.arange(len(scores)), scores.argmax(1)]
    order = np.argsort(det.ood_scores(scores, queries), kind="stable")
    assert (np.diff(top_confidence[order]) >= -1e-12).all()   # accepted inputs never less confident


def test_mahalanobis_sees_out_of_scope_inputs_along_directions_the_classes_never_vary_in(rng):
    """Classes spread widely along a few shared directions and barely along the rest. Out-of-scope inputs are as
    far from the nearest class mean (in plain distance) as in-scope ones, but along the quiet directions: a cosine
    cannot tell them apart, a shared covariance can."""
    from sklearn.metrics import roc_auc_score

    from fewshot.classifiers import PrototypeClassifier

    dim, n_classes = 24, 8
    centres = 3.0 * unit_rows(rng.normal(size=(n_classes, dim)))
    scale = np.r_[np.full(4, 1.0), np.full(dim - 4, 0.05)]           # 4 loud directions, 20 quiet ones

    def draw(classes, along):
        noise = rng.normal(size=(len(classes), dim)) * along
        return centres[classes] + noise / np.linalg.norm(noise, axis=1, keepdims=True) * 0.9

    labels = np.repeat(np.arange(n_classes), 12)
    support = ArraySupport(draw(labels, scale), labels, n_classes)
    in_scope = draw(np.repeat(np.arange(n_classes), 30), scale)
    out_scope = draw(np.repeat(np.arange(n_classes), 30), scale[::-1] * np.r_[np.zeros(4), np.ones(dim - 4)])
    queries = np.concatenate([in_scope, out_scope])
    scores = PrototypeClassifier().fit(support).scores(queries)
    truth = np.r_[np.ones(len(in_scope)), np.zeros(len(out_scope))]
    auroc = {s: roc_auc_score(truth, OpenSetDetector(score=s).fit(support).ood_scores(scores, queries))
             for s in ("class-relative", "mahalanobis", "class-relative+mahalanobis")}
    assert auroc["mahalanobis"] > 0.95 and auroc["mahalanobis"] > auroc["class-relative"] + 0.1, auroc
    assert auroc["class-relative+mahalanobis"] > auroc["class-relative"] + 0.05, auroc


@pytest.mark.parametrize("score", ["mahalanobis", "class-relative+mahalanobis"])
def test_mahalanobis_scores_need_the_queries(rng, score):
    from fewshot.classifiers import PrototypeClassifier

    centres, vectors, labels = clustered(rng)
    vectors = unit_rows(vectors + 0.35 * rng.normal(size=vectors.shape))  # some LOO mistakes: Platt is fitted
    support = ArraySupport(vectors, labels, 8)
    det = OpenSetDetector(score=score).fit(support)
    near = unit_rows(centres + 0.3 * rng.normal(size=centres.shape) / np.sqrt(24))   # not support examples
    scores = PrototypeClassifier().fit(support).scores(near)
    for call in (det.accept, det.ood_scores, det.confidences):
        with pytest.raises(ValueError, match="query vectors"):
            call(scores)
    assert det.accept(scores, near).mean() > 0.8


def test_mahalanobis_scores_fall_back_to_class_relative_without_enough_examples(rng):
    """Two examples per class for 4 classes leave 4 residuals: too few for a covariance."""
    from fewshot.classifiers import PrototypeClassifier

    _, vectors, labels = clustered(rng, n_classes=4, per_class=2)
    support = ArraySupport(vectors, labels, 4)
    queries = unit_rows(rng.normal(size=(20, 24)))
    scores = PrototypeClassifier().fit(support).scores(queries)
    reference = OpenSetDetector(score="class-relative").fit(support)
    for score in ("mahalanobis", "class-relative+mahalanobis"):
        det = OpenSetDetector(score=score).fit(support)
        assert det.mahalanobis_ is None and det.effective_score_ == "class-relative"
        np.testing.assert_allclose(det.ood_scores(scores, queries), reference.ood_scores(scores))
        assert det.threshold_ == reference.threshold_ and det.platt_ == reference.platt_
        if reference.platt_ is not None:
            np.testing.assert_allclose(det.confidences(scores, queries), reference.confidences(scores))


@pytest.mark.parametrize("score", ["class-relative", "class-relative+mahalanobis", "mahalanobis"])
def test_a_class_with_only_a_description_is_not_rejected_for_having_no_examples(rng, score):
    """Eight classes have examples, a ninth only a prompt vector. Inputs near that prompt are predicted as the
    ninth class; a covariance knows nothing about it, so the Mahalanobis part must not count against them."""
    from fewshot.classifiers import PrototypeClassifier

    centres, vectors, labels = clustered(rng, n_classes=9)
    keep = labels < 8
    class_vectors = np.zeros((9, 24), np.float32)
    class_vectors[8] = centres[8]
    mask = np.r_[np.zeros(8, bool), True]
    support = ArraySupport(vectors[keep], labels[keep], 9, class_vectors, mask)
    det = OpenSetDetector(score=score, keep=0.95).fit(support)
    queries = vectors[~keep]                                   # the ninth class's own inputs
    scores = PrototypeClassifier().fit(support).scores(queries)
    assert (scores.argmax(1) == 8).mean() > 0.9
    assert det.accept(scores, queries).mean() > 0.8


@pytest.mark.parametrize("score", OOD_SCORES)
def test_assess_gives_what_confidences_and_accept_give(rng, score):
    from fewshot.classifiers import PrototypeClassifier

    centres, vectors, labels = clustered(rng)
    vectors = unit_rows(vectors + 0.35 * rng.normal(size=vectors.shape))  # some LOO mistakes: Platt is fitted
    support = ArraySupport(vectors, labels, 8)
    det = OpenSetDetector(score=score, keep=0.8).fit(support)
    queries = unit_rows(np.concatenate([centres + 0.3 * rng.normal(size=centres.shape) / np.sqrt(24),
                                        rng.normal(size=(40, 24))]))
    scores = PrototypeClassifier().fit(support).scores(queries)
    confidence, accepted = det.assess(scores, queries)
    assert det.platt_ is not None and 0 < accepted.mean() < 1
    np.testing.assert_array_equal(confidence, det.confidences(scores, queries))
    np.testing.assert_array_equal(accepted, det.accept(scores, queries))
    assert det.assess(scores, queries, reject=False)[1].all()


@pytest.mark.parametrize("seed", range(6))
def test_platt_scaling_by_newton_equals_sklearns_logistic_regression(seed):
    """fit_platt solves LogisticRegression(C=10) on one feature without importing scikit-learn (start-up time):
    the same slope and intercept, near-separable data included."""
    from sklearn.linear_model import LogisticRegression

    from fewshot.openset.detector import fit_platt

    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 400))
    x = rng.normal(size=n) * rng.uniform(0.1, 5)
    correct = rng.random(n) < 1 / (1 + np.exp(-(rng.uniform(0.5, 20) * x + rng.normal())))
    correct[:2] = [True, False]
    ours = fit_platt(x, correct)
    model = LogisticRegression(C=10.0, tol=1e-10, max_iter=10_000).fit(x[:, None], correct)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if slope <= 0:
        assert ours is None
    else:
        assert ours is not None
        np.testing.assert_allclose(ours, (slope, intercept), rtol=1e-4, atol=1e-4)
