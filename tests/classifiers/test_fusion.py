"""Fusion of zero-shot prior and support cache: reductions, leave-one-out selection, persistence."""
import numpy as np
import pytest

from fewshot.classifiers import ArraySupport, FusionClassifier, PrototypeClassifier, ZeroShotClassifier, make_classifier
from fewshot.classifiers import fusion as fusion_module
from fewshot.classifiers.fusion import cache_scores, loo_rows
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


def test_large_supports_score_a_fixed_sample_of_rows_and_it_matches_brute_force(rng, monkeypatch):
    """Above the memory bound the selection scores a fixed sample of rows against all examples: (rows, m)
    arrays instead of (m, m); on those rows it still equals refitting without each one."""
    assert np.array_equal(loo_rows(100), np.arange(100))                  # 100² ≤ MAX_LOO_ENTRIES: every row
    big = loo_rows(40_000)
    assert len(big) == fusion_module.MIN_LOO_ROWS and np.array_equal(big, loo_rows(40_000))
    monkeypatch.setattr(fusion_module, "MAX_LOO_ENTRIES", 100)
    monkeypatch.setattr(fusion_module, "MIN_LOO_ROWS", 7)
    v, y, t, _, _ = clustered(rng, C=4, shots=5)                          # m = 20 > 10: 7 sampled rows
    scored = loo_rows(len(y))
    assert len(scored) == 7
    clf = FusionClassifier(priors=(0.5,), cache_weights=(0.3,)).fit(ArraySupport(v, y, 4, t))
    correct = 0
    for i in scored:
        keep = np.arange(len(y)) != i
        ref = FusionClassifier(prior_weight=0.5, cache_weight=0.3).fit(ArraySupport(v[keep], y[keep], 4, t))
        correct += int(np.argmax(ref.scores(v[i:i + 1])[0]) == y[i])
    assert clf.loo_accuracy_ == pytest.approx(correct / len(scored))


def test_tip_adapter_trains_on_row_samples_above_the_memory_bound(rng, monkeypatch):
    v, y, t, q, qy = clustered(rng, C=4, shots=6)
    full = make_classifier("tip-adapter").fit(ArraySupport(v, y, 4, t))
    monkeypatch.setattr(fusion_module, "MAX_LOO_ENTRIES", 100)
    monkeypatch.setattr(fusion_module, "MIN_LOO_ROWS", 8)
    sampled = make_classifier("tip-adapter").fit(ArraySupport(v, y, 4, t))
    assert not np.array_equal(sampled.M_, full.M_)                        # a different (sampled) training path
    again = make_classifier("tip-adapter").fit(ArraySupport(v, y, 4, t))
    np.testing.assert_array_equal(sampled.M_, again.M_)                   # still deterministic
    assert (sampled.scores(q).argmax(1) == qy).mean() >= (full.scores(q).argmax(1) == qy).mean() - 0.1


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
