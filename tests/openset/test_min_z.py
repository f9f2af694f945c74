"""The default open-set score "min-z", the default threshold and the conservative "drop" rule, measured on
held-out synthetic queries (not on the leave-one-out scores they were chosen on)."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fewshot.classifiers import ArraySupport, PrototypeClassifier
from fewshot.errors import UncalibratedRejectionWarning
from fewshot.openset import DEFAULT_OOD_SCORE, OpenSetDetector, generic_sentences
from fewshot.openset.detector import allowed_rejections
from tests.fakes import unit_rows


def world(seed, n_classes=6, shots=5, dim=48, loud=6, n_query=40, noise=0.5, quiet=0.15):
    """Classes spread in a few "loud" directions and barely in the others (a small support in many dimensions,
    like 10 sentence embeddings per class in 384). Returns (support, (in-scope queries, their labels), far-off
    queries): inputs near the classes in the loud directions but displaced along the quiet ones, which every
    class and the support as a whole share — the case the relative Mahalanobis distance cancels out."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    on, off = basis[:, :loud], basis[:, loud:]
    centres = rng.normal(size=(n_classes, loud)) @ on.T

    def draw(labels, spread):
        return unit_rows(centres[labels] + noise * rng.normal(size=(len(labels), loud)) @ on.T
                         + spread * rng.normal(size=(len(labels), dim - loud)) @ off.T)

    labels = np.repeat(np.arange(n_classes), shots)
    support = ArraySupport(draw(labels, quiet), labels, n_classes)
    query_labels = np.repeat(np.arange(n_classes), n_query)
    far = draw(rng.integers(0, n_classes, 300), 3 * quiet)
    return support, (draw(query_labels, quiet), query_labels), far


def auroc(det, support, known, far):
    queries = np.concatenate([known, far])
    scores = PrototypeClassifier().fit(support).scores(queries)
    return roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(far))], det.ood_scores(scores, queries))


def test_the_default_never_loses_far_off_inputs_to_the_raw_cosine_on_small_supports():
    """The old default (class-relative + relative Mahalanobis) loses inputs far from every class to the raw top
    cosine; the default, a minimum that keeps the raw score as one part, does not."""
    assert DEFAULT_OOD_SCORE == "min-z" and OpenSetDetector().score == "min-z"
    raw, old, default = [], [], []
    for seed in range(6):
        support, (known, _), far = world(seed)
        raw.append(auroc(OpenSetDetector(score="max-score").fit(support), support, known, far))
        old.append(auroc(OpenSetDetector(score="class-relative+mahalanobis").fit(support), support, known, far))
        default.append(auroc(OpenSetDetector().fit(support), support, known, far))
    raw, old, default = map(np.array, (raw, old, default))
    assert old.mean() < raw.mean() - 0.02 and old.min() < raw.min() - 0.1, (old, raw)
    assert (default >= raw - 0.003).all() and default.mean() > raw.mean() + 0.03, (default, raw)


def test_min_z_is_the_minimum_of_three_loo_standardised_parts(rng):
    support, (known, _), far = world(1)
    det = OpenSetDetector(score="min-z").fit(support)
    assert det.effective_score_ == "min-z" and det.mahalanobis_ is not None and det.class_offsets_ is None
    assert det.z_params_ is not None and len(det.z_params_) == 3
    queries = np.concatenate([known, far])
    scores = PrototypeClassifier().fit(support).scores(queries)
    d2 = det.mahalanobis_.class_distances(queries)
    parts = [scores.max(1), det.mahalanobis_.background_distances(queries) - d2.min(1), -d2.min(1)]
    expected = np.min([(p.astype(np.float64) - m) / s for p, (m, s) in zip(parts, det.z_params_)], axis=0)
    np.testing.assert_allclose(det.ood_scores(scores, queries), expected, rtol=1e-5, atol=1e-5)   # float32 scores
    # standardised on the correctly classified LOO examples: those sit near 0 in every part
    assert det.loo_ood_ is not None and abs(np.median(det.loo_ood_[det.loo_correct_])) < 1.0


def test_min_z_confidence_ranks_inputs_as_rejection_does():
    support, (known, _), far = world(2, noise=0.9)                 # some LOO mistakes: Platt is fitted
    det = OpenSetDetector().fit(support)
    queries = np.concatenate([known, far])
    scores = PrototypeClassifier().fit(support).scores(queries)
    assert det.platt_ is not None
    top_confidence = det.confidences(scores, queries)[np.arange(len(scores)), scores.argmax(1)]
    order = np.argsort(det.ood_scores(scores, queries), kind="stable")
    assert (np.diff(top_confidence[order]) >= -1e-12).all()
    with pytest.raises(ValueError, match="query vectors"):
        det.ood_scores(scores)


def test_min_z_falls_back_to_the_raw_score_without_enough_examples_for_a_covariance(rng):
    """Two examples per class for 4 classes leave 4 residuals: too few for a covariance. The fallback is the raw top
    score (which never loses far-off inputs), not the class-relative one."""
    support, (known, _), far = world(3, n_classes=4, shots=2)
    queries = np.concatenate([known, far])
    scores = PrototypeClassifier().fit(support).scores(queries)
    det, raw = OpenSetDetector().fit(support), OpenSetDetector(score="max-score").fit(support)
    assert det.mahalanobis_ is None and det.effective_score_ == "max-score"
    np.testing.assert_allclose(det.ood_scores(scores, queries), raw.ood_scores(scores))
    assert det.threshold_ == raw.threshold_ and det.platt_ == raw.platt_


def test_a_description_only_class_is_not_rejected_by_min_z_for_having_no_examples():
    support, (known, labels), _ = world(4, n_classes=7)
    vectors, support_labels = support.examples()
    keep = support_labels < 6                                      # class 6: a description, no examples
    class_vectors = np.zeros((7, vectors.shape[1]), np.float32)
    class_vectors[6] = unit_rows(known[labels == 6].mean(0, keepdims=True))[0]
    mask = np.r_[np.zeros(6, bool), True]
    mixed = ArraySupport(vectors[keep], support_labels[keep], 7, class_vectors, mask)
    det = OpenSetDetector().fit(mixed)
    assert det.effective_score_ == "min-z"
    queries = known[labels == 6]
    scores = PrototypeClassifier().fit(mixed).scores(queries)
    assert (scores.argmax(1) == 6).mean() > 0.9
    assert det.accept(scores, queries).mean() > 0.8


def test_the_default_coverage_holds_on_held_out_queries():
    """``target="coverage"``, ``keep=0.97``: the share of new in-scope queries accepted is the requested one on
    average, not only on the LOO scores it was chosen on."""
    achieved = []
    for seed in range(10):
        support, (known, _), _ = world(seed, n_classes=10, shots=10, n_query=100, noise=0.9)
        det = OpenSetDetector().fit(support)
        assert det.keep == 0.97 and det.target == "coverage"
        achieved.append(det.accept(PrototypeClassifier().fit(support).scores(known), known).mean())
    assert 0.955 <= np.mean(achieved) <= 0.99, achieved


def test_the_drop_target_is_conservative_on_held_out_queries():
    """``target="drop", keep=0.98`` asks for at most 2 points of in-scope accuracy lost. On 100 LOO examples the
    plain order statistic (reject floor(0.02·n) correct ones) overshoots on new queries; the shipped bound keeps
    the achieved loss within the request on average."""
    achieved, order_statistic = [], []
    for seed in range(10):
        support, (known, labels), _ = world(seed, n_classes=10, shots=10, n_query=100, noise=0.9)
        scores = PrototypeClassifier().fit(support).scores(known)
        correct = scores.argmax(1) == labels
        det = OpenSetDetector(target="drop", keep=0.98).fit(support)
        achieved.append(100 * (correct.mean() - (correct & det.accept(scores, known)).mean()))
        pool = np.sort(det.loo_ood_[det.loo_correct_])
        plain = pool[int(np.floor(0.02 * len(det.loo_ood_) + 1e-9))]
        order_statistic.append(100 * (correct.mean() - (correct & (det.ood_scores(scores, known) >= plain)).mean()))
    assert np.mean(achieved) <= 2.0 and np.mean(order_statistic) > 2.0, (achieved, order_statistic)


def test_allowed_rejections_bounds_the_share_with_confidence():
    from scipy.stats import beta

    assert allowed_rejections(100, 0.02) == 0 and allowed_rejections(200, 0.02) == 1
    assert allowed_rejections(0, 0.1) == 0 and allowed_rejections(50, 0.0) == 0
    previous = 0
    for n in (120, 300, 1000, 2000):
        k = allowed_rejections(n, 0.02)
        assert k <= np.floor(0.02 * n) and k >= previous
        assert k == 0 or beta.ppf(0.9, k + 1, n - k) <= 0.02 < beta.ppf(0.9, k + 2, n - k - 1)
        previous = k


# ------------------------------------------------------------------ no leave-one-out data: description-only classes
def described(seed, n_classes=5, dim=32):
    """Description-only support over one domain (descriptions share a direction) and generic background text
    (random directions), plus in-scope queries near the descriptions and off-domain ones."""
    rng = np.random.default_rng(seed)
    domain = unit_rows(rng.normal(size=(1, dim)))
    descriptions = unit_rows(1.2 * domain + rng.normal(size=(n_classes, dim)) / np.sqrt(dim))
    support = ArraySupport(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), n_classes, descriptions,
                           np.ones(n_classes, bool))
    labels = np.repeat(np.arange(n_classes), 20)
    known = unit_rows(descriptions[labels] + 0.4 * rng.normal(size=(len(labels), dim)) / np.sqrt(dim))
    return support, known, unit_rows(rng.normal(size=(200, dim))), unit_rows(rng.normal(size=(100, dim)))


def test_description_only_classes_reject_by_a_threshold_from_generic_text():
    support, known, background, off_domain = described(0)
    det = OpenSetDetector().fit(support, "prototype", background=background)
    assert det.threshold_source_ == "zero-shot" and det.effective_score_ == "max-score" and det.platt_ is None
    assert np.isfinite(det.threshold_)
    clf = PrototypeClassifier().fit(support)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncalibratedRejectionWarning)
        assert det.accept(clf.scores(known), known).mean() > 0.95
        assert det.accept(clf.scores(off_domain), off_domain).mean() < 0.25   # like the background: mostly out
    # the background may be a callable, called only for small supports (fewer than SMALL_SUPPORT_LOO LOO examples)
    calls = []
    lazy = OpenSetDetector().fit(support, background=lambda: calls.append(1) or background)
    assert calls == [1] and lazy.threshold_ == det.threshold_
    large, _, _ = world(0, shots=10, dim=32)                         # 60 LOO examples
    OpenSetDetector().fit(large, background=lambda: calls.append(2) or background)
    assert calls == [1]
    small, _, _ = world(0, dim=32)                                   # 30 LOO examples
    OpenSetDetector().fit(small, background=lambda: calls.append(3) or background)
    assert calls == [1, 3]


def test_small_supports_weigh_the_loo_threshold_against_the_zero_shot_one():
    """Below SMALL_SUPPORT_LOO LOO examples, with background text: the threshold on the top score is the mean of
    the LOO threshold (m examples) and the zero-shot one (SMALL_SUPPORT_PRIOR examples' worth), so a handful of
    LOO scores from the best-supported classes cannot set it alone; without background, the LOO rule as before."""
    from fewshot.openset.background import zero_shot_threshold
    from fewshot.openset.detector import SMALL_SUPPORT_PRIOR, loo_scores

    support, (known, _), _ = world(3)
    _, _, background, _ = described(3, dim=48)
    det = OpenSetDetector().fit(support, "prototype", background=background)
    scores, truth = loo_scores(support, "prototype")
    m = len(truth)
    assert 5 <= m < 50 and det.threshold_source_ == "loo+zero-shot" and det.effective_score_ == "max-score"
    prior, _ = zero_shot_threshold(PrototypeClassifier().fit(support), support, background)
    loo = float(np.quantile(scores.max(1), 1 - det.keep))
    assert det.threshold_ == pytest.approx((m * loo + SMALL_SUPPORT_PRIOR * prior) / (m + SMALL_SUPPORT_PRIOR))
    # rejection and confidence read the same score: accepting follows the confidence shown
    clf = PrototypeClassifier().fit(support)
    queries = np.concatenate([known, background])
    confidence, accepted = det.assess(clf.scores(queries), queries)
    assert confidence is not None
    top = confidence.max(1)
    assert top[accepted].min() >= top[~accepted].max()
    # no background: the plain LOO rule on the default score
    plain = OpenSetDetector().fit(support, "prototype")
    assert plain.threshold_source_ == "loo" and plain.effective_score_ == "min-z"


def test_a_few_loo_examples_already_move_the_zero_shot_threshold():
    """1-4 LOO examples (the README's engine): not enough to calibrate alone, but they count: the threshold is
    their LOO threshold and the zero-shot one, weighed 3 : SMALL_SUPPORT_PRIOR."""
    from fewshot.openset.background import zero_shot_threshold
    from fewshot.openset.detector import SMALL_SUPPORT_PRIOR

    support, known, background, _ = described(4)
    small = ArraySupport(known[[0, 20, 40]], np.array([0, 1, 2]), support.n_classes, *support.class_vectors())
    det = OpenSetDetector().fit(small, "prototype", background=background)
    assert det.threshold_source_ == "loo+zero-shot" and det.loo_ood_ is not None and len(det.loo_ood_) == 3
    prior, _ = zero_shot_threshold(PrototypeClassifier().fit(small), small, background)
    loo = float(np.quantile(det.loo_ood_, 1 - det.keep))
    assert loo > prior                       # the examples score above generic text: the threshold rises
    assert det.threshold_ == pytest.approx((3 * loo + SMALL_SUPPORT_PRIOR * prior) / (3 + SMALL_SUPPORT_PRIOR))
    assert prior < det.threshold_ < loo
    assert det.platt_ is None                # too few to fit a confidence map

def test_rejection_that_cannot_be_calibrated_warns_instead_of_silently_accepting():
    support, known, _, off_domain = described(1)
    det = OpenSetDetector().fit(support)                           # no examples, no background
    assert det.threshold_ == -np.inf and det.threshold_source_ == "none"
    scores = PrototypeClassifier().fit(support).scores(off_domain)
    with pytest.warns(UncalibratedRejectionWarning, match="not calibrated"):
        assert det.accept(scores, off_domain).all()
    with pytest.warns(UncalibratedRejectionWarning):
        det.assess(scores, off_domain, reject=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncalibratedRejectionWarning)
        det.assess(scores, off_domain, reject=False)               # no rejection asked: nothing to warn about
    one_class = ArraySupport(np.zeros((0, 32), np.float32), np.zeros(0, np.int64), 1,
                             support.class_vectors()[0][:1], np.ones(1, bool))
    lonely = OpenSetDetector().fit(one_class, background=off_domain)
    assert lonely.threshold_ == -np.inf and "two classes" in (lonely.uncalibrated_ or "")
    assert issubclass(UncalibratedRejectionWarning, UserWarning)


def test_the_generic_sentences_ship_with_the_package():
    sentences = generic_sentences()
    assert len(sentences) >= 50 and len(set(sentences)) == len(sentences)
    assert all(s and not s.startswith("#") and s == s.strip() for s in sentences)


def test_without_a_confidence_map_the_confidence_is_half_at_the_threshold():
    """Fewer than 5 LOO examples, with background: confidences are sigmoid(s · (score − threshold)), so the shown
    score orders inputs as rejection does (accepted ⇔ >= 0.5) and typical generic text shows 0.1."""
    from fewshot.openset.detector import ZERO_SHOT_GENERIC_CONFIDENCE

    support, known, background, off_domain = described(5)
    det = OpenSetDetector().fit(support, "prototype", background=background)
    assert det.platt_ is None and det.zero_shot_scale_ is not None and det.zero_shot_scale_ > 0
    clf = PrototypeClassifier().fit(support)
    queries = np.concatenate([known, off_domain])
    scores = clf.scores(queries)
    confidence, accepted = det.assess(scores, queries)
    assert confidence is not None and accepted.any() and not accepted.all()
    assert np.array_equal(accepted, confidence.max(1) >= 0.5)
    generic = np.median(clf.scores(background).max(1))
    at_generic = 1 / (1 + np.exp(-det.zero_shot_scale_ * (generic - det.threshold_)))
    assert at_generic == pytest.approx(ZERO_SHOT_GENERIC_CONFIDENCE)
    # no background: no confidence at all (the engine shows softmax probabilities and says so)
    assert OpenSetDetector().fit(support, "prototype").confidences(scores, queries) is None


def test_the_per_label_confidence_map_is_the_fallback_when_every_loo_example_is_right():
    from fewshot.openset.calibration import fit_platt, fit_platt_per_label

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 5)
    scores = rng.uniform(0.0, 0.4, size=(20, 4))
    scores[np.arange(20), truth] = rng.uniform(0.5, 0.9, 20)        # every top label right
    assert fit_platt(scores.max(1), scores.argmax(1) == truth) is None
    slope, intercept = fit_platt_per_label(scores, truth)
    assert slope > 0 and 1 / (1 + np.exp(-(slope * 0.9 + intercept))) > 0.5 > 1 / (1 + np.exp(-(slope * 0.1 +
                                                                                              intercept)))
