import numpy as np
import pytest

from fewshot import FewShotEngine
from fewshot.adapt import Adaptation
from fewshot.classifiers import ArraySupport, PrototypeClassifier
from fewshot.encoders.base import Encoder
from fewshot.errors import InvalidInputError
from tests.fakes import unit_rows


class VectorEncoder(Encoder):
    """Test double: 'inputs' are already vectors."""
    name, dim, modalities = "test-vectors", 16, frozenset({"text"})

    def encode(self, inputs, **kw):
        return unit_rows(np.asarray(inputs, np.float32))


def shifted_task(rng, n_classes=5, dim=16, shift=1.5):
    """Support drawn around class centres; targets around the same centres plus a shared offset."""
    centres = unit_rows(rng.normal(size=(n_classes, dim)))
    offset = shift * unit_rows(rng.normal(size=(1, dim)))
    support = unit_rows(centres + 0.3 * rng.normal(size=centres.shape))
    labels = np.repeat(np.arange(n_classes), 40)
    targets = unit_rows(centres[labels] + offset + 0.5 * rng.normal(size=(len(labels), dim)))
    return support, targets, labels


@pytest.mark.parametrize("method", ["recenter", "coral", "soft-kmeans", "recenter+soft-kmeans", "mmd"])
def test_adaptation_views_have_the_right_shapes(rng, method):
    support, targets, _ = shifted_task(rng)
    base = ArraySupport(support, np.arange(5), 5, unit_rows(rng.normal(size=(5, 16))))
    adapted = Adaptation(method).fit(base, targets)
    view = adapted.wrap(base)
    assert view.prototypes().shape == (5, 16) and view.n_classes == 5
    q = adapted.transform_queries(targets[:7])
    assert q.shape == (7, 16)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)


def test_recentering_and_soft_kmeans_help_under_a_shared_shift(rng):
    support, targets, labels = shifted_task(rng)
    base = ArraySupport(support, np.arange(5), 5)
    plain = (PrototypeClassifier().fit(base).scores(targets).argmax(1) == labels).mean()
    for method in ("recenter", "recenter+soft-kmeans"):
        a = Adaptation(method).fit(base, targets)
        acc = (PrototypeClassifier().fit(a.wrap(base)).scores(a.transform_queries(targets)).argmax(1)
               == labels).mean()
        assert acc > plain, (method, acc, plain)


def test_mmd_probe_aligns_support_to_target_deterministically(rng):
    support, targets, labels = shifted_task(rng)
    base = ArraySupport(np.repeat(support, 3, 0) + 0.05 * rng.normal(size=(15, 16)).astype(np.float32),
                        np.repeat(np.arange(5), 3), 5)
    a = Adaptation("mmd", steps=60).fit(base, targets)
    before, after = a.mmd_history_
    without = Adaptation("mmd", steps=60, mmd_weight=0.0).fit(base, targets).mmd_history_[1]
    assert after < 0.85 * before and after < 0.85 * without  # the MMD term, not the head, shrank the gap
    b = Adaptation("mmd", steps=60).fit(base, targets)
    np.testing.assert_array_equal(a.support_map_, b.support_map_)  # same seed → same map
    assert a.support_map_.shape == (16, 16) and not np.allclose(a.support_map_, np.eye(16))
    acc = (PrototypeClassifier().fit(a.wrap(base)).scores(targets).argmax(1) == labels).mean()
    plain = (PrototypeClassifier().fit(base).scores(targets).argmax(1) == labels).mean()
    assert acc >= plain - 0.02, (acc, plain)  # aligning must not wreck the classes
    with pytest.raises(InvalidInputError):
        Adaptation("mmd", mmd_weight=-1)


@pytest.mark.parametrize("method", ["recenter+soft-kmeans", "mmd"])
def test_engine_adapt_then_undo_restores_predictions_exactly(rng, tmp_path, method):
    support, targets, _ = shifted_task(rng)
    eng = FewShotEngine(encoder=VectorEncoder())
    for c in range(5):
        eng.add_class(f"c{c}", vectors=support[c:c + 1] + 0.01 * rng.normal(size=(3, 16)))
    before = eng.predict_proba(targets)
    eng.adapt(targets, method=method)
    adapted = eng.predict_proba(targets)
    assert not np.allclose(adapted, before)
    eng.save(tmp_path / "eng")
    reloaded = FewShotEngine.load(tmp_path / "eng", encoder=VectorEncoder())
    np.testing.assert_allclose(reloaded.predict_proba(targets), adapted, atol=1e-6)
    eng.add_class("new", vectors=targets[:2])          # the adaptation follows the changed support
    assert eng.predict_proba(targets).shape == (len(targets), 6)
    eng.remove_class("new")
    eng.undo_adapt()
    np.testing.assert_array_equal(eng.predict_proba(targets), before)


def test_bad_adaptation_input_changes_nothing(rng):
    support, targets, _ = shifted_task(rng)
    eng = FewShotEngine(encoder=VectorEncoder())
    eng.add_class("a", vectors=support[:2])
    eng.add_class("b", vectors=support[2:4])
    before = eng.predict_proba(targets)
    with pytest.raises(InvalidInputError):
        eng.adapt(targets, method="nope")
    with pytest.raises(InvalidInputError):
        eng.adapt(np.full((3, 16), np.nan))
    with pytest.raises(InvalidInputError):
        eng.adapt(targets[:1])
    assert eng.adapt_spec is None
    np.testing.assert_array_equal(eng.predict_proba(targets), before)
