"""Tip-Adapter-F style cache fine-tune."""
import numpy as np

from fewshot.classifiers import (
    ArraySupport,
    FusionClassifier,
    TipAdapterFClassifier,
    ZeroShotClassifier,
    make_classifier,
)
from tests.fakes import clustered


def test_shapes_and_registry(rng):
    v, y, t, q, qy = clustered(rng)
    clf = make_classifier("finetune").fit(ArraySupport(v, y, 6, t))
    assert isinstance(clf, TipAdapterFClassifier)
    s = clf.scores(q)
    assert s.shape == (len(q), 6) and s.dtype == np.float32 and np.isfinite(s).all()
    assert np.mean(np.argmax(s, 1) == qy) >= 0.8


def test_no_training_is_fusion(rng):
    v, y, t, q, _ = clustered(rng)
    sup = ArraySupport(v, y, 6, t)
    np.testing.assert_allclose(TipAdapterFClassifier(epochs=0).fit(sup).scores(q),
                               FusionClassifier().fit(sup).scores(q), atol=1e-5)


def test_training_moves_parameters_and_lowers_support_loss(rng):
    v, y, t, _, _ = clustered(rng, noise=0.9)
    sup = ArraySupport(v, y, 6, t)
    before = TipAdapterFClassifier(epochs=0).fit(sup)
    after = TipAdapterFClassifier(epochs=50, lr=1e-2, reg=0.0).fit(sup)
    assert not np.allclose(before.M_, after.M_)
    nll = lambda c: -np.mean(np.log(c.predict_proba(v)[np.arange(len(y)), y]))  # noqa: E731
    assert nll(after) < nll(before)


def test_zero_shots_is_zero_shot(rng):
    _, _, t, q, _ = clustered(rng)
    sup = ArraySupport(np.zeros((0, 16)), np.zeros(0, np.int64), 6, t)
    np.testing.assert_allclose(TipAdapterFClassifier().fit(sup).scores(q), ZeroShotClassifier().fit(sup).scores(q),
                               atol=1e-6)


def test_deterministic_and_restore(rng):
    v, y, t, q, _ = clustered(rng)
    sup = ArraySupport(v, y, 6, t)
    a, b = TipAdapterFClassifier(seed=1).fit(sup), TipAdapterFClassifier(seed=1).fit(sup)
    np.testing.assert_array_equal(a.scores(q), b.scores(q))
    r = TipAdapterFClassifier(**a.config()).restore(sup, a.state())
    np.testing.assert_array_equal(r.scores(q), a.scores(q))
