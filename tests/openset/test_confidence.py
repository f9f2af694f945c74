import numpy as np
import pytest

from fewshot.classifiers import ArraySupport
from fewshot.openset.calibration import fit_temperature
from fewshot.openset.confidence import SMALL_SUPPORT_LOO, ScoreCalibration
from fewshot.openset.detector import OpenSetDetector
from tests.fakes import unit_rows


def overlapping(rng, n_classes=10, per_class=12, dim=24, spread=1.2):
    centres = unit_rows(rng.normal(size=(n_classes, dim)))
    labels = np.repeat(np.arange(n_classes), per_class)
    vectors = unit_rows(centres[labels] + spread * rng.normal(size=(len(labels), dim)) / np.sqrt(dim))
    return ArraySupport(vectors, labels, n_classes), centres


def reference_temperature(scores, labels, bounds=(1.0, 200.0)):
    """The earlier fit: scipy's bounded scalar minimiser of the NLL over log T."""
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        z = np.exp(log_t) * scores
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=np.log(bounds), method="bounded").x))


def test_the_temperature_is_the_minimiser_of_the_loo_nll(rng):
    for _ in range(60):
        m, C, scale = int(rng.integers(5, 300)), int(rng.integers(2, 40)), rng.uniform(0.02, 1.0)
        logits = rng.normal(size=(m, C)) * scale
        true_t = rng.uniform(0.5, 300)
        p = np.exp(true_t * logits - (true_t * logits).max(1, keepdims=True))
        labels = np.array([rng.choice(C, p=row / row.sum()) for row in p])
        assert fit_temperature(logits, labels) == pytest.approx(reference_temperature(logits, labels), rel=1e-3)


def test_the_temperature_stops_at_its_bounds():
    scores = np.eye(6)[np.arange(30) % 6] * 0.9           # every example right by a wide margin
    assert fit_temperature(scores, np.arange(30) % 6) == 200.0
    assert fit_temperature(scores, (np.arange(30) + 1) % 6) == 1.0   # every example wrong: as flat as allowed
    assert fit_temperature(scores[:4], np.arange(4), default=7.0) == 7.0


def test_confidences_are_the_top_score_platt_map_and_follow_the_raw_score(rng):
    support, centres = overlapping(rng)
    calibration = ScoreCalibration().fit(support, "prototype")
    assert not calibration.small and calibration.platt_ is not None
    held = calibration.held_out_
    queries = unit_rows(rng.normal(size=(200, 24)))
    from fewshot.classifiers import make_classifier

    scores = make_classifier("prototype").fit(support).scores(queries)
    confidence = calibration.confidences(scores)
    assert confidence.shape == scores.shape and np.all((confidence > 0) & (confidence < 1))
    top = confidence.max(1)
    order = np.argsort(scores.max(1))
    assert np.all(np.diff(top[order]) >= -1e-12)            # monotone in the raw top score
    # calibrated on the LOO examples: the mean confidence is close to the LOO accuracy
    loo_conf = calibration.confidences(held.scores).max(1)
    assert abs(loo_conf.mean() - (held.scores.argmax(1) == held.truth).mean()) < 0.05


def test_the_detector_reuses_the_calibrations_loo_scores(rng, monkeypatch):
    support, _ = overlapping(rng)
    calibration = ScoreCalibration().fit(support, "prototype")
    called = []
    monkeypatch.setattr("fewshot.openset.loo.HeldOut.fit", classmethod(lambda *a, **k: called.append(1)))
    detector = OpenSetDetector().fit(support, "prototype", held_out=calibration.held_out_)
    assert not called and detector.platt_ is not None
    assert detector.temperature_ == pytest.approx(calibration.temperature_, rel=1e-9)


def test_a_small_support_is_left_to_the_detector(rng):
    support, _ = overlapping(rng, n_classes=4, per_class=3)
    calibration = ScoreCalibration().fit(support, "prototype")
    assert len(calibration.held_out_.truth) < SMALL_SUPPORT_LOO and calibration.small
    assert calibration.confidences(np.zeros((1, 4))) is None


def test_bad_settings_are_typed_errors():
    from fewshot.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        ScoreCalibration(max_loo_examples=0)
    with pytest.raises(InvalidInputError):
        ScoreCalibration(seed=-1)


def test_rows_whose_true_class_could_not_be_scored_do_not_move_the_temperature(rng):
    logits = rng.normal(size=(80, 5)) * 0.3
    labels = logits.argmax(1)
    with_unscorable = np.vstack([logits, np.tile([-np.inf, 0.9, 0.0, 0.0, 0.0], (20, 1))])
    both = np.r_[labels, np.zeros(20, int)]
    assert fit_temperature(with_unscorable, both) == pytest.approx(fit_temperature(logits, labels), rel=1e-9)
