import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.covariance import ledoit_wolf

from fewshot.errors import InvalidInputError
from fewshot.openset.mahalanobis import RelativeMahalanobis, fold_grams, ledoit_wolf_from_scatter


def gaussian_classes(rng, n_classes=6, per_class=8, dim=10):
    means = 3.0 * rng.normal(size=(n_classes, dim))
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)            # one shared, anisotropic covariance
    labels = np.repeat(np.arange(n_classes), per_class)
    return means[labels] + rng.normal(size=(len(labels), dim)) @ mix, labels


def with_ridge(cov):
    return cov + 1e-6 * np.trace(cov) / len(cov) * np.eye(len(cov))


def test_distances_match_scipy_with_the_ledoit_wolf_covariances(rng):
    vectors, labels = gaussian_classes(rng)
    model = RelativeMahalanobis().fit(vectors, labels, 6)
    means = np.stack([vectors[labels == c].mean(0) for c in range(6)])
    within = with_ridge(ledoit_wolf(vectors - means[labels], assume_centered=True)[0])
    centre = vectors.mean(0)
    background = with_ridge(ledoit_wolf(vectors - centre, assume_centered=True)[0])
    queries = rng.normal(size=(5, 10)) * 3
    expected = np.array([[scipy_mahalanobis(q, m, np.linalg.inv(within)) ** 2 for m in means] for q in queries])
    np.testing.assert_allclose(model.class_distances(queries), expected, rtol=1e-6)
    expected_bg = np.array([scipy_mahalanobis(q, centre, np.linalg.inv(background)) ** 2 for q in queries])
    np.testing.assert_allclose(model.background_distances(queries), expected_bg, rtol=1e-6)
    np.testing.assert_allclose(model.scores(queries), expected_bg - expected.min(1), rtol=1e-6)


@pytest.mark.parametrize("n, d", [(40, 10), (12, 30), (200, 1), (5, 5)])
def test_ledoit_wolf_from_the_scatter_equals_sklearn(rng, n, d):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) if d > 1 else rng.normal(size=(n, 1))
    cov, shrinkage = ledoit_wolf_from_scatter(x.T @ x, float(((x ** 2).sum(1) ** 2).sum()), n)
    expected_cov, expected_shrinkage = ledoit_wolf(x, assume_centered=True)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-9, atol=1e-12)
    assert shrinkage == pytest.approx(expected_shrinkage, abs=1e-12)


def test_a_fold_fitted_from_the_whole_gram_minus_the_block_equals_a_plain_fit(rng):
    vectors, labels = gaussian_classes(rng, n_classes=5, per_class=12)
    rests = [np.arange(len(labels)) % 4 != k for k in range(4)]
    queries = rng.normal(size=(6, 10)) * 3
    for rest, gram in zip(rests, fold_grams(vectors, rests)):
        fast = RelativeMahalanobis().fit(vectors[rest], labels[rest], 7, gram=gram)   # classes 5, 6 empty
        plain = RelativeMahalanobis().fit(vectors[rest], labels[rest], 7)
        np.testing.assert_allclose(fast.class_scores(queries), plain.class_scores(queries), rtol=1e-8)
        np.testing.assert_allclose(fast.leave_one_out_scores(vectors[rest][:5], labels[rest][:5]),
                                   plain.leave_one_out_scores(vectors[rest][:5], labels[rest][:5]), rtol=1e-8)


def test_classes_without_examples_are_left_out_of_the_minimum(rng):
    vectors, labels = gaussian_classes(rng)
    model = RelativeMahalanobis().fit(vectors, labels, 8)       # classes 6 and 7 have no example
    d2 = model.class_distances(vectors[:4])
    assert np.isinf(d2[:, 6:]).all() and np.isfinite(d2[:, :6]).all()
    assert np.isfinite(model.scores(vectors[:4])).all()


def test_too_few_residuals_is_a_typed_error():
    vectors = np.eye(6)[:, :4]
    labels = np.array([0, 0, 1, 1, 2, 2])                        # 3 residuals < MIN_RESIDUALS
    assert not RelativeMahalanobis.can_fit(labels, 3)
    with pytest.raises(InvalidInputError, match="residuals"):
        RelativeMahalanobis().fit(vectors, labels, 3)


def test_identical_vectors_do_not_break_the_fit():
    vectors = np.ones((20, 5))
    labels = np.repeat(np.arange(2), 10)
    assert np.isfinite(RelativeMahalanobis().fit(vectors, labels, 2).scores(np.zeros((2, 5)))).all()


def test_leave_one_out_scores_equal_a_refit_without_the_example_at_the_fitted_shrinkage(rng):
    """The closed form must equal refitting without x_i (class mean, background mean, both covariances), with the
    Ledoit-Wolf shrinkage α, its target scale and the normaliser N held at the full fit's values, then rescaling
    the own-class d² by (1 + 1/n)/(1 + 1/(n − 1)). Class 4 has a single example (left out, no class 4 remains)
    and class 5 none."""
    vectors, labels = gaussian_classes(rng, n_classes=5, per_class=6, dim=8)
    vectors, labels = vectors[:-5], labels[:-5]               # class 4 keeps one example
    n_total, counts = len(labels), np.bincount(labels, minlength=6)
    model = RelativeMahalanobis().fit(vectors, labels, 6)
    loo = model.leave_one_out_scores(vectors, labels)
    assert loo.shape == (n_total, 6) and np.isneginf(loo[:, 5]).all()

    def shrunk(scatter_of):                  # ledoit_wolf's (1 − α)·S/N + α·tr(S/N)/p·I, with α, tr and N fixed
        _, alpha = ledoit_wolf(scatter_of, assume_centered=True)
        target = np.trace(scatter_of.T @ scatter_of / n_total) / scatter_of.shape[1]
        return lambda r: with_ridge((1 - alpha) * r.T @ r / n_total + alpha * target * np.eye(r.shape[1]))

    means = np.stack([vectors[labels == c].mean(0) for c in range(5)])
    within, background = shrunk(vectors - means[labels]), shrunk(vectors - vectors.mean(0))
    for i in (0, 7, n_total - 1):                             # the last one is class 4's only example
        keep = np.arange(n_total) != i
        present = [c for c in range(5) if (keep & (labels == c)).any()]
        means_i = {c: vectors[keep & (labels == c)].mean(0) for c in present}
        precision = np.linalg.inv(within(vectors[keep] - np.stack([means_i[c] for c in labels[keep]])))
        centre = vectors[keep].mean(0)
        bg = (vectors[i] - centre) @ np.linalg.inv(background(vectors[keep] - centre)) @ (vectors[i] - centre)
        expected = np.full(6, -np.inf)
        for c in present:
            d2 = (vectors[i] - means_i[c]) @ precision @ (vectors[i] - means_i[c])
            if c == labels[i]:
                d2 *= (1 + 1 / counts[c]) / (1 + 1 / (counts[c] - 1))
            expected[c] = bg - d2
        np.testing.assert_allclose(loo[i], expected, rtol=1e-4, atol=1e-6)
    assert np.isneginf(loo[n_total - 1, 4])
    assert (loo.max(1) < model.scores(vectors)).mean() > 0.9      # left out, an example looks less in-scope


def test_large_supports_are_fitted_on_a_class_stratified_subset(rng, monkeypatch):
    import fewshot.openset.mahalanobis as module
    from fewshot.classifiers import ArraySupport, PrototypeClassifier
    from fewshot.openset.detector import OpenSetDetector

    monkeypatch.setattr(module, "MAX_FIT_ROWS", 60)
    vectors, labels = gaussian_classes(rng, n_classes=7, per_class=30)
    vectors, labels = vectors[:-26].astype(np.float32), labels[:-26]   # class 6 keeps 4 examples
    for seed in range(20):                                    # no draw loses the small class
        rows = module.fit_rows(labels, seed)
        kept = np.bincount(labels[rows], minlength=7)
        assert kept.sum() <= 60 + 2 * 7 and (kept >= 2).all(), kept
    assert module.fit_rows(labels[:60]) is None
    fitted = []
    real_fit = module.RelativeMahalanobis.fit

    def spy(self, x, y, n_classes):
        fitted.append(len(y))
        return real_fit(self, x, y, n_classes)

    monkeypatch.setattr(module.RelativeMahalanobis, "fit", spy)
    support = ArraySupport(vectors, labels, 7)
    det = OpenSetDetector(keep=0.9, target="drop").fit(support)
    assert det.mahalanobis_ is not None and len(fitted) == 1 and fitted[0] <= 60 + 14   # one fit, on the subset
    assert (det.mahalanobis_.counts > 0).all()
    scores = PrototypeClassifier().fit(support).scores(vectors)
    assert (det.ood_scores(scores, vectors) >= det.threshold_).mean() > 0.8


def test_leave_one_out_parts_are_the_two_terms_of_the_leave_one_out_scores(rng):
    """``leave_one_out_parts`` gives the background d²_0 and the class d²_c that ``leave_one_out_scores`` subtracts
    (the plain Mahalanobis score −min d²_c of "min-z" reads the second alone); held in, they are the distances of
    a new input."""
    vectors, labels = gaussian_classes(rng, n_classes=5, per_class=6, dim=8)
    model = RelativeMahalanobis().fit(vectors, labels, 6)
    background, d2 = model.leave_one_out_parts(vectors, labels)
    assert background.shape == (len(labels),) and d2.shape == (len(labels), 6) and np.isinf(d2[:, 5]).all()
    np.testing.assert_allclose(background[:, None] - d2, model.leave_one_out_scores(vectors, labels))
    assert (background > model.background_distances(vectors)).all()            # left out: farther
    own = np.arange(len(labels)), labels
    assert (d2[own] > model.class_distances(vectors)[own]).all()
