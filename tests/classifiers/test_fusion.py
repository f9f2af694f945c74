"""Fusion of zero-shot prior and support cache: reductions, leave-one-out selection, persistence."""
import numpy as np
import pytest

from fewshot.classifiers import ArraySupport, FusionClassifier, PrototypeClassifier, ZeroShotClassifier, make_classifier
from fewshot.classifiers.fusion import cache_scores
from tests.fakes import clustered, unit_rows


def test_shapes_and_registry(rng):
    v, y, t, q, _ = clustered(rng)
    clf = make_classifier("fusion").fit(ArraySupport(v, y, 6, t))
    assert isinstance(clf, FusionClassifier)
    assert clf.scores(q).shape == (len(q), 6) and clf.scores(q).dtype == np.float32
    np.testing.assert_allclose(clf.predict_proba(q).sum(1), 1, atol=1e-5)
    assert np.isfinite(clf.loo_accuracy_)


def test_zero_shots_is_zero_shot(rng):
    _, _, t, q, _ = clustered(rng)
    sup = ArraySupport(np.zeros((0, 16)), np.zeros(0, np.int64), 6, t)
    np.testing.assert_allclose(FusionClassifier().fit(sup).scores(q), ZeroShotClassifier().fit(sup).scores(q),
                               atol=1e-6)


def test_prior_weight_zero_is_prototype(rng):
    v, y, t, q, _ = clustered(rng)
    sup = ArraySupport(v, y, 6, t)
    fused = FusionClassifier(prior_weight=0.0, cache_weight=0.0).fit(sup).scores(q)
    np.testing.assert_allclose(fused, PrototypeClassifier(prior_weight=0.0).fit(sup).scores(q), atol=1e-5)
    # and a finite prior weight matches the prototype that counts the text vector as that many examples
    np.testing.assert_allclose(FusionClassifier(prior_weight=2.0, cache_weight=0.0).fit(sup).scores(q),
                               PrototypeClassifier(prior_weight=2.0).fit(sup).scores(q), atol=1e-5)


def test_cache_scores_reference(rng):
    v, y, _, q, _ = clustered(rng)
    beta = 7.0
    got, has = cache_scores(q @ v.T, y, 6, beta)
    ref = np.stack([np.log(np.mean(np.exp(beta * (q @ v[y == c].T)), axis=1)) / beta for c in range(6)], 1)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert has.all()


def test_leave_one_out_matches_brute_force(rng):
    """The vectorised leave-one-out score of every (rho, alpha) equals refitting without each example."""
    v, y, t, _, _ = clustered(rng, C=4, shots=3)
    clf = FusionClassifier(priors=(0.5,), cache_weights=(0.3,)).fit(ArraySupport(v, y, 4, t))
    correct = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        ref = FusionClassifier(prior_weight=0.5, cache_weight=0.3).fit(ArraySupport(v[keep], y[keep], 4, t))
        correct += int(np.argmax(ref.scores(v[i:i + 1])[0]) == y[i])
    assert clf.loo_accuracy_ == pytest.approx(correct / len(y))


def test_selection_prefers_support_when_text_is_noise(rng):
    v, y, _, q, qy = clustered(rng, noise=0.3)
    bad_text = unit_rows(rng.normal(size=(6, 16)))
    clf = FusionClassifier().fit(ArraySupport(v, y, 6, bad_text))
    assert clf.prior_weight_ <= 1.0
    assert np.mean(np.argmax(clf.scores(q), 1) == qy) >= 0.9


def test_deterministic_and_restore(rng):
    v, y, t, q, _ = clustered(rng)
    sup = ArraySupport(v, y, 6, t)
    a, b = FusionClassifier().fit(sup), FusionClassifier().fit(sup)
    np.testing.assert_array_equal(a.scores(q), b.scores(q))
    restored = FusionClassifier(**a.config()).restore(sup, a.state())
    np.testing.assert_array_equal(restored.scores(q), a.scores(q))
    assert restored.logit_scale == a.logit_scale


def test_bad_arguments():
    with pytest.raises(ValueError, match="cache_weight"):
        FusionClassifier(cache_weight=1.5)
    with pytest.raises(ValueError, match="prior_weight"):
        FusionClassifier(prior_weight=-1)
