"""Linear probe on frozen embeddings: prior initialisation, cross-validated strength, persistence."""
import numpy as np
import pytest

from fewshot.classifiers import ArraySupport, LinearProbeClassifier, PrototypeClassifier, make_classifier
from fewshot.classifiers.linear import stratified_folds
from tests.fakes import clustered


def test_shapes_and_cv(rng):
    v, y, t, q, qy = clustered(rng)
    clf = make_classifier("linear").fit(ArraySupport(v, y, 6, t))
    assert isinstance(clf, LinearProbeClassifier)
    s = clf.scores(q)
    assert s.shape == (len(q), 6) and s.dtype == np.float32
    assert clf.lam_ in clf.lambdas and set(clf.cv_accuracy_) == set(clf.lambdas)
    np.testing.assert_allclose(clf.predict_proba(q).sum(1), 1, atol=1e-5)
    assert np.mean(np.argmax(s, 1) == qy) >= 0.8


def test_strong_regularisation_is_the_prior(rng):
    v, y, t, q, _ = clustered(rng)
    sup = ArraySupport(v, y, 6, t)
    lin = LinearProbeClassifier(lam=1e6).fit(sup)
    proto = PrototypeClassifier(prior_weight=1.0).fit(sup)
    np.testing.assert_array_equal(np.argmax(lin.scores(q), 1), np.argmax(proto.scores(q), 1))


def test_learns_beyond_prototypes(rng):
    """Classes separated along one direction, with a large shared nuisance offset: LR finds the direction."""
    d = 8
    y = np.repeat(np.arange(2), 20)
    x = rng.normal(size=(40, d)) * np.array([0.05] + [1.0] * (d - 1))
    x[:, 0] += np.where(y == 0, -0.1, 0.1)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    lin = LinearProbeClassifier(lam=1e-3, text_examples=False).fit(ArraySupport(x, y, 2))
    assert np.mean(np.argmax(lin.scores(x), 1) == y) == 1.0


def test_deterministic_and_restore(rng):
    v, y, t, q, _ = clustered(rng)
    sup = ArraySupport(v, y, 6, t)
    a, b = LinearProbeClassifier(seed=3).fit(sup), LinearProbeClassifier(seed=3).fit(sup)
    np.testing.assert_array_equal(a.scores(q), b.scores(q))
    r = LinearProbeClassifier(**a.config()).restore(sup, a.state())
    np.testing.assert_array_equal(r.scores(q), a.scores(q))
    with pytest.raises(ValueError, match="classes"):
        LinearProbeClassifier().restore(ArraySupport(v[:10], y[:10] % 2, 2), a.state())


def test_zero_shots_uses_text(rng):
    _, _, t, q, _ = clustered(rng)
    sup = ArraySupport(np.zeros((0, 16)), np.zeros(0, np.int64), 6, t)
    clf = LinearProbeClassifier().fit(sup)
    assert clf.scores(q).shape == (len(q), 6)
    np.testing.assert_array_equal(np.argmax(clf.scores(t), 1), np.arange(6))


def test_stratified_folds_balanced():
    y = np.repeat(np.arange(3), 7)
    f = stratified_folds(y, 3, seed=0)
    for c in range(3):
        counts = np.bincount(f[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1


def test_open_set_folds_reuse_the_chosen_strength_instead_of_cross_validating_again(rng, monkeypatch):
    """clone_for_folds fixes lam to the fitted lam_ (one fit per leave-one-out fold, not folds x lambdas + 1); an
    unfitted probe, or one built with a fixed lam, clones as it is."""
    from fewshot.classifiers import linear
    from fewshot.openset import OpenSetDetector

    v, y, t, _, _ = clustered(rng)
    support = ArraySupport(v, y, 6, t)
    assert LinearProbeClassifier().clone_for_folds().lam is None
    assert LinearProbeClassifier(lam=0.5).fit(support).clone_for_folds().lam == 0.5
    clf = LinearProbeClassifier().fit(support)
    fold = clf.clone_for_folds()
    assert fold.lam == clf.lam_ and fold.get_config_dict() == {**clf.get_config_dict(), "lam": clf.lam_}
    fits = []
    real = linear.fit_logreg
    monkeypatch.setattr(linear, "fit_logreg", lambda *a, **k: fits.append(1) or real(*a, **k))
    det = OpenSetDetector(score="max-score").fit(support, clf)
    n_folds = 10                                                   # loo_folds' default blocks
    assert det.threshold_source_ == "loo" and len(fits) == n_folds


@pytest.mark.parametrize("threads", [1, 2])
def test_held_out_scores_side_by_side_equal_the_generic_refits(rng, monkeypatch, threads):
    """The probe's own held_out_scores (folds fitted side by side at lam_) gives the scores of one
    clone_for_folds() refit per fold, in fold order; an unfitted probe takes the generic path."""
    import fewshot._threads
    from fewshot.classifiers.base import Classifier
    from fewshot.openset.loo import loo_folds

    monkeypatch.setattr(fewshot._threads, "default_threads", lambda: threads)
    v, y, t, _, _ = clustered(rng)
    support = ArraySupport(v, y, 6, t)
    clf = LinearProbeClassifier().fit(support)
    folds = loo_folds(support)
    assert len(folds) > 2
    ours = clf.held_out_scores(support, folds)
    generic = Classifier.held_out_scores(clf, support, folds)
    assert [s.shape for s in ours] == [(len(block), 6) for block, _ in folds]
    for a, b in zip(ours, generic):
        np.testing.assert_allclose(a, b, atol=1e-6)
    unfitted = LinearProbeClassifier()
    seen = []
    monkeypatch.setattr(Classifier, "held_out_scores", lambda self, s, f: seen.append(self) or [])
    assert unfitted.held_out_scores(support, folds) == [] and seen == [unfitted]
