"""Calibration primitives of the open-set detector, fitted on leave-one-out scores of the support: the softmax
temperature, the 1-D Platt map (P(label right | score)), the confidence bound of ``target="drop"`` and the
class-relative offsets. Pure functions of arrays; ``fewshot.openset.detector`` composes them."""
from __future__ import annotations

import numpy as np

DROP_CONFIDENCE = 0.9       # one-sided confidence of the upper bound that target="drop" keeps within 1 − keep


def fit_temperature(scores: np.ndarray, labels: np.ndarray, default: float = 20.0,
                    bounds: tuple[float, float] = (1.0, 200.0)) -> float:
    """Logit scale T in ``bounds`` minimising the NLL of softmax(T·scores) on (m, C) LOO scores; ``default`` if
    m < 5. The NLL is convex in T (a log-sum-exp of lines in T, less a line), so safeguarded Newton steps on its
    exact first and second derivatives find the minimum in a few passes over the scores (bisection whenever a step
    would leave the bracket the derivative's sign keeps).

    Each pass works on the scores' gaps to their row's maximum (≤ 0, so exp never overflows and the softmax needs
    no per-pass shift), in float32 — float64's exponential costs ten times as much on (1,500, 50) scores — with
    every sum in float64; two buffers serve every pass (fresh (m, C) temporaries cost page faults per pass)."""
    s = np.asarray(scores, np.float32)      # LOO scores are float32: no copy of an (m, C) array
    labels = np.asarray(labels)
    known = np.isfinite(s[np.arange(len(labels)), labels])   # a true class the fold could not score says nothing
    if not known.all():
        s, labels = s[known], labels[known]
    if len(labels) < 5:
        return float(default)
    finite = np.isfinite(s)   # -inf scores (classes a fold cannot score) get probability 0
    all_finite = bool(finite.all())
    gaps = s - (s if all_finite else np.where(finite, s, -np.inf)).max(1, keepdims=True)   # (m, C) ≤ 0
    if not all_finite:
        gaps[~finite] = -np.inf
    true_gap = gaps[np.arange(len(labels)), labels].astype(np.float64)   # finite: the row's true class is
    gaps_or_zero = gaps if all_finite else np.where(finite, gaps, np.float32(0.0))
    p, weighted = np.empty_like(gaps), np.empty_like(gaps)

    def derivatives(t: float) -> tuple[float, float]:
        np.multiply(gaps, np.float32(t), out=p)
        np.exp(p, out=p)                                  # unnormalised softmax(t · scores), (m, C)
        total = p.sum(1, dtype=np.float64)
        np.multiply(p, gaps_or_zero, out=weighted)
        mean = weighted.sum(1, dtype=np.float64) / total
        np.multiply(weighted, gaps_or_zero, out=weighted)
        second = weighted.sum(1, dtype=np.float64) / total
        return float((mean - true_gap).mean()), float((second - mean * mean).mean())

    lo, hi = bounds
    if derivatives(hi)[0] <= 0:   # still falling at the upper bound (e.g. every LOO example right, by a margin)
        return float(hi)
    t = float(np.clip(default, lo, hi))
    slope, curvature = derivatives(t)
    if slope > 0 and derivatives(lo)[0] >= 0:   # already rising at the lower bound (scores that say little)
        return float(lo)
    for _ in range(100):
        if slope > 0:
            hi = t
        else:
            lo = t
        step = t - slope / curvature if curvature > 0 else np.inf
        new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(new - t) <= 1e-7 * t or hi - lo <= 1e-7 * t:
            return float(new)
        t = new
        slope, curvature = derivatives(t)
    return float(t)


def allowed_rejections(n: int, budget: float, confidence: float = DROP_CONFIDENCE) -> int:
    """The largest k such that rejecting k correct examples of n keeps the one-sided ``confidence`` Clopper-Pearson
    upper bound on the rejected-and-correct share ≤ ``budget`` (0 when even k = 0 does not)."""
    if n <= 0 or budget <= 0:
        return 0
    from scipy.special import betaincinv  # beta.ppf without importing scipy.stats (a second of start-up)

    k = int(np.floor(budget * n + 1e-9))          # the bound exceeds k / n, so no larger k can qualify
    while k > 0 and float(betaincinv(k + 1, n - k, confidence)) > budget:
        k -= 1
    return k


def _spread(values: np.ndarray) -> float:
    """Standard deviation of (m,) values, 1.0 when it is not positive or there are fewer than 2."""
    spread = float(np.std(values)) if len(values) >= 2 else 0.0
    return spread if spread > 1e-12 else 1.0


def class_offsets(top: np.ndarray, predicted: np.ndarray, truth: np.ndarray, n_classes: int,
                  shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-class score offsets for the ``"class-relative"`` score, from (m,) LOO top scores, predictions, truth.

    offset_c = mean_c − mean: ``mean_c`` is the mean top score of the LOO examples correctly classified as c,
    shrunk toward the global ``mean`` of all correct ones with ``shrinkage`` pseudo-examples (a class with no
    correct LOO example gets offset 0). Returns ((C,) offsets, (m,) LOO class-relative scores), where each correct
    example's own class offset is computed without it — so thresholds chosen on these scores are not
    optimistic about the example's own class."""
    correct = predicted == truth
    if not correct.any():
        return np.zeros(n_classes), top.astype(np.float64)
    top = top.astype(np.float64)
    mean = float(top[correct].mean())
    counts = np.bincount(predicted[correct], minlength=n_classes).astype(np.float64)
    sums = np.bincount(predicted[correct], weights=top[correct], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        offsets = np.where(counts + shrinkage > 0, (sums + shrinkage * mean) / (counts + shrinkage), mean) - mean
        own_counts = counts[predicted] - correct
        own_sums = sums[predicted] - np.where(correct, top, 0.0)
        own = np.where(own_counts + shrinkage > 0, (own_sums + shrinkage * mean) / (own_counts + shrinkage), mean)
    return offsets, top - (own - mean)


def fit_platt(top_scores: np.ndarray, correct: np.ndarray) -> tuple[float, float] | None:
    """1-D logistic regression correct ~ sigmoid(slope · score + intercept); None when the LOO outcomes are all
    the same (nothing to fit) or the fitted slope is not positive (the map must increase with the score)."""
    correct = np.asarray(correct, bool)
    if len(correct) < 5 or correct.all() or not correct.any():
        return None
    slope, intercept = _logistic_1d(np.asarray(top_scores, np.float64), correct.astype(np.float64), c=10.0)
    return (slope, intercept) if slope > 0 else None


def fit_platt_per_label(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float] | None:
    """``fit_platt`` on every (example, label) pair of (m, C) LOO ``scores`` with (m,) true classes: P(a label is
    right | its score). The fallback when the top labels alone cannot be fitted (all LOO examples right, as on small
    supports), so that confidences still follow the score that rejection thresholds."""
    scores = np.asarray(scores, np.float64)
    right = np.arange(scores.shape[1])[None, :] == np.asarray(truth)[:, None]
    finite = np.isfinite(scores)
    return fit_platt(scores[finite], right[finite])


def _logistic_1d(x: np.ndarray, y: np.ndarray, c: float, iterations: int = 100) -> tuple[float, float]:
    """argmin over (w, b) of  w²/2 + c·Σ logloss(y, sigmoid(w·x + b))  — sklearn's ``LogisticRegression(C=c)`` on one
    feature (L2 on the slope, none on the intercept) — by Newton's method on the 2 x 2 system (the objective is
    strictly convex), without importing scikit-learn."""
    w = b = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(w * x + b)))
        r, h = p - y, p * (1.0 - p)
        grad = np.array([w + c * float(r @ x), c * float(r.sum())])
        hess = np.array([[1.0 + c * float(h @ (x * x)), c * float(h @ x)], [c * float(h @ x), c * float(h.sum())]])
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
        w, b = w - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-10:
            break
    return w, b
