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


@pytest.mark.parametrize("method", ["recenter", "coral", "soft-kmeans", "recenter+soft-kmeans", "anchored-kmeans", "mmd"])
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


@pytest.mark.parametrize("method", ["recenter+soft-kmeans", "anchored-kmeans", "mmd"])
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


# ---------------------------------------------------------------- anchored soft k-means ("anchored-kmeans")
def off_centre_task(rng, C=6, d=16, shots=0):
    """Noisy prompt vectors sharing an offset of their own (a text/query gap), a pool of 10 queries per class
    with another shared offset: (support, pool (10·C, d), pool labels)."""
    from tests.fakes import clustered

    x, y, text, q, qy = clustered(rng, C=C, shots=max(shots, 1), d=d, noise=0.6, text_noise=1.6)
    text = unit_rows(text + unit_rows(rng.normal(size=(1, d))))
    q = unit_rows(q + 0.5 * unit_rows(rng.normal(size=(1, d))))
    vectors = unit_rows(x + 0.4 * rng.normal(size=x.shape)) if shots else np.zeros((0, d), np.float32)
    return ArraySupport(vectors, y if shots else np.zeros(0, np.int64), C, text), q, qy


def _accuracy(support, queries, truth, adaptation=None, classifier="zero-shot"):
    from fewshot.classifiers import make_classifier

    if adaptation is not None:
        support, queries = adaptation.wrap(support), adaptation.transform_queries(queries)
    return (make_classifier(classifier).fit(support).scores(queries).argmax(1) == truth).mean()


@pytest.mark.parametrize("shots,classifier", [(0, "zero-shot"), (1, "prototype")])
def test_anchored_kmeans_beats_no_adaptation_when_names_are_off_centre(rng, shots, classifier):
    support, pool, truth = off_centre_task(rng, shots=shots)
    plain = _accuracy(support, pool, truth, classifier=classifier)
    a = Adaptation("anchored-kmeans").fit(support, pool)
    assert a.fallback_ is None and a.prototypes_.shape == (6, 16)
    np.testing.assert_allclose(np.linalg.norm(a.prototypes_, axis=1), 1, atol=1e-5)
    adapted = _accuracy(support, pool, truth, a, classifier)
    assert adapted >= plain + 0.1, (adapted, plain)
    balanced = _accuracy(support, pool, truth, Adaptation("anchored-kmeans", balanced=True).fit(support, pool),
                         classifier)
    assert balanced >= plain + 0.1, (balanced, plain)  # the pool is balanced: equal class sizes hold


def test_anchored_kmeans_centres_prompt_vectors_on_their_own_mean(rng):
    support, pool, _ = off_centre_task(rng)
    a = Adaptation("anchored-kmeans", steps=1, anchor=0.0).fit(support, pool)
    cv, mask = support.class_vectors()
    np.testing.assert_allclose(a.class_mean_, cv.mean(0), atol=1e-6)
    view_cv, _ = a.calibration_view(support).class_vectors()    # no k-means prototypes in the calibration view
    np.testing.assert_allclose(view_cv, unit_rows(cv - cv.mean(0)), atol=1e-5)
    np.testing.assert_allclose(a.transform_queries(pool), unit_rows(pool - pool.mean(0)), atol=1e-5)
    # the anchor keeps prototypes near their start: a huge anchor leaves P0 (the centred names) in place
    held = Adaptation("anchored-kmeans", anchor=1e6).fit(support, pool)
    np.testing.assert_allclose(held.prototypes_, view_cv, atol=1e-4)


def test_sinkhorn_gives_equal_class_mass():
    from fewshot.adapt import sinkhorn

    logits = np.random.default_rng(1).normal(size=(40, 4)) * 3
    logits[:, 0] += 4                                            # class 0 would take most of the mass
    resp = sinkhorn(logits, iters=50)
    assert resp.shape == (40, 4) and resp.dtype == np.float32
    np.testing.assert_allclose(resp.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(resp.sum(0), 10, atol=0.05)


def test_anchored_kmeans_falls_back_on_a_small_pool(rng):
    support, pool, _ = off_centre_task(rng)                      # 6 classes, 10 per class
    small = Adaptation("anchored-kmeans").fit(support, pool[:29])  # < 5 × 6
    assert small.fallback_ and small.prototypes_ is None and small.mean_ is None
    assert small.wrap(support) is support and small.calibration_view(support) is support
    np.testing.assert_array_equal(small.transform_queries(pool), pool)
    assert Adaptation("anchored-kmeans").fit(support, pool[:30]).fallback_ is None
    assert Adaptation("anchored-kmeans", min_per_class=0).fit(support, pool[:2]).fallback_ is None


@pytest.mark.parametrize("options", [{"anchor": -1}, {"anchor": "1"}, {"anchor": float("nan")},
                                     {"name_weight": -0.5}, {"balanced": 1}, {"balanced": "yes"},
                                     {"min_per_class": -1}, {"min_per_class": 2.5}, {"steps": 0},
                                     {"temperature": 0}, {"bogus": 1}])
def test_anchored_kmeans_options_are_checked(rng, options):
    support, pool, _ = off_centre_task(rng)
    eng = FewShotEngine(encoder=VectorEncoder())
    for c in range(3):
        eng.add_class(f"c{c}", vectors=pool[c * 10:c * 10 + 2])
    before = eng.predict_proba(pool)
    with pytest.raises(InvalidInputError):
        eng.adapt(pool, method="anchored-kmeans", **options)
    assert eng.adapt_spec is None
    np.testing.assert_array_equal(eng.predict_proba(pool), before)
    if "bogus" not in options:
        with pytest.raises(InvalidInputError):
            Adaptation("anchored-kmeans", **options)


def test_anchored_kmeans_needs_an_example_or_a_prompt_vector_per_class(rng):
    support, pool, _ = off_centre_task(rng, shots=1)
    vectors, labels = support.examples()
    cv, mask = support.class_vectors()
    mask = mask.copy()
    mask[2] = False
    keep = labels != 2
    bare = ArraySupport(vectors[keep], labels[keep], 6, cv, mask)
    with pytest.raises(InvalidInputError):
        Adaptation("anchored-kmeans").fit(bare, pool)


class TableEncoder(VectorEncoder):
    """Test double: vectors pass through; a text is looked up in ``table`` (descriptions → prompt vectors)."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def encode_text(self, texts, batch_size=64, show_progress_bar=None):
        unknown = [t for t in texts if t not in self.table]
        if unknown:   # what an encoder that cannot embed a text raises (e.g. the generic background sentences)
            raise InvalidInputError(f"TableEncoder has no vector for {unknown[0]!r}")
        return unit_rows(np.stack([self.table[t] for t in texts]))


@pytest.mark.parametrize("classifier", ["prototype", "simpleshot", "knn", "zero-shot", "fusion", "linear",
                                        "logreg", "tip-adapter"])
def test_engine_anchored_kmeans_works_with_every_classifier_and_round_trips(rng, tmp_path, classifier):
    support, pool, truth = off_centre_task(rng)
    names, _ = support.class_vectors()
    encoder = TableEncoder({f"topic {c}": names[c] for c in range(6)})
    eng = FewShotEngine(encoder=encoder, templates=["{}"])
    for c in range(6):
        eng.add_class(f"c{c}", vectors=pool[truth == c][:2] + 0.05 * rng.normal(size=(2, 16)),
                      description=f"topic {c}")
    if classifier != "prototype":
        eng.refine(classifier)
    before = eng.predict_proba(pool)
    eng.adapt(pool, method="anchored-kmeans", balanced=True, anchor=0.5)
    adapted = eng.predict_proba(pool)
    assert adapted.shape == before.shape and np.isfinite(adapted).all()
    assert eng.adaptation is not None and eng.adaptation.prototypes_ is not None
    assert eng.adapt_spec[1] == "anchored-kmeans" and eng.adapt_spec[2] == {"balanced": True, "anchor": 0.5}
    labels = [p.label for p in eng.predict_vectors(pool)]
    eng.save(tmp_path / "eng")
    reloaded = FewShotEngine.load(tmp_path / "eng", encoder=encoder)
    np.testing.assert_allclose(reloaded.predict_proba(pool), adapted, atol=1e-6)
    assert [p.label for p in reloaded.predict_vectors(pool)] == labels
    eng.undo_adapt()
    np.testing.assert_array_equal(eng.predict_proba(pool), before)


def test_engine_anchored_kmeans_fallback_predicts_as_unadapted(rng):
    _, pool, truth = off_centre_task(rng)
    eng = FewShotEngine(encoder=VectorEncoder())
    for c in range(6):
        eng.add_class(f"c{c}", vectors=pool[truth == c][:2])
    before = eng.predict_proba(pool)
    eng.adapt(pool[:10], method="anchored-kmeans")               # 10 < 5 per class × 6 classes
    np.testing.assert_array_equal(eng.predict_proba(pool), before)
    assert eng.adaptation is not None and eng.adaptation.fallback_
