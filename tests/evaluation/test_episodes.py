"""Episode sampler invariants, CI formula, batched scores vs the registered classifiers, easyfsl agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.classifiers import CLASSIFIERS, PrototypeClassifier
from fewshot.errors import InvalidInputError
from fewshot.evaluation.episodes import (
    BATCHED,
    confidence_interval,
    evaluate_episodes,
    looped_scores,
    run_all_classes,
    run_episodic,
    run_zero_shot,
    sample_episodes,
    sample_shots,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n_classes: int, per_class: np.ndarray | int, dim: int = 16, noise: float = 1.2, seed: int = 0,
              centre_seed: int | None = None):
    """Unit vectors around random class centres (drawn from ``centre_seed``, default ``seed``):
    (m, dim) float32, (m,) labels."""
    rng = np.random.default_rng(seed)
    counts = np.broadcast_to(per_class, (n_classes,))
    labels = np.repeat(np.arange(n_classes), counts)
    centres = np.random.default_rng(seed if centre_seed is None else centre_seed).standard_normal((n_classes, dim))
    return unit(centres[labels] + noise * rng.standard_normal((len(labels), dim))), labels


def check_episode_invariants(eps, sup_labels, qry_labels, n, k, q, e):
    assert eps.classes.shape == (e, n) and eps.support.shape == (e, n, k) and eps.query.shape == (e, n, q)
    for i in range(e):
        assert len(set(eps.classes[i])) == n                                   # distinct classes
        # class balance: each class position holds exactly K support and Q query items of that class
        np.testing.assert_array_equal(sup_labels[eps.support[i]], np.repeat(eps.classes[i][:, None], k, 1))
        np.testing.assert_array_equal(qry_labels[eps.query[i]], np.repeat(eps.classes[i][:, None], q, 1))
        assert len(set(eps.support[i].ravel())) == n * k                       # no repeated shot
        assert len(set(eps.query[i].ravel())) == n * q


def test_cross_split_invariants():
    sup = np.repeat(np.arange(12), np.arange(12) + 6)        # imbalanced 6..17 per class
    qry = np.repeat(np.arange(12), 7)
    eps = sample_episodes(sup, qry, n_way=5, n_shot=5, n_query=7, n_episodes=300, seed=3)
    check_episode_invariants(eps, sup, qry, 5, 5, 7, 300)
    assert not eps.same_pool


def test_one_pool_support_and_query_disjoint():
    labels = np.repeat(np.arange(10), 20)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]              # unsorted labels
    eps = sample_episodes(labels, None, n_way=5, n_shot=5, n_query=15, n_episodes=200, seed=1)
    check_episode_invariants(eps, labels, labels, 5, 5, 15, 200)
    for i in range(200):
        assert not set(eps.support[i].ravel()) & set(eps.query[i].ravel())
    assert eps.same_pool


def test_only_eligible_classes_and_uniform_use():
    labels = np.concatenate([np.repeat(np.arange(8), 10), np.full(3, 8), [-1, -1]])   # class 8 too small
    eps = sample_episodes(labels, None, n_way=4, n_shot=2, n_query=3, n_episodes=4000, seed=0)
    counts = np.bincount(eps.classes.ravel(), minlength=9)
    assert counts[8] == 0
    expected = 4000 * 4 / 8
    assert np.all(np.abs(counts[:8] - expected) < 0.1 * expected)
    # each item of a class is drawn about equally often (uniform without replacement)
    used = np.bincount(eps.support.ravel(), minlength=len(labels))[:80]
    assert used.min() > 0.6 * used.mean() and used.max() < 1.4 * used.mean()


def test_seed_reproducible_and_repeats_distinct():
    labels = np.repeat(np.arange(20), 30)
    a = sample_episodes(labels, None, n_way=5, n_shot=1, n_query=5, n_episodes=50, seed=7)
    b = sample_episodes(labels, None, n_way=5, n_shot=1, n_query=5, n_episodes=50, seed=7)
    c = sample_episodes(labels, None, n_way=5, n_shot=1, n_query=5, n_episodes=50, seed=8)
    np.testing.assert_array_equal(a.support, b.support)
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.array_equal(a.support, c.support)
    flat = {tuple(s.ravel()) for s in a.support}
    assert len(flat) == 50                                      # episodes of one run differ
    assert len({tuple(r) for r in a.classes}) > 40


def test_sampler_errors():
    labels = np.repeat(np.arange(3), 5)
    with pytest.raises(InvalidInputError, match="only 3 classes"):
        sample_episodes(labels, None, n_way=4, n_shot=1, n_query=1, n_episodes=1)
    with pytest.raises(InvalidInputError, match="only 0 classes"):
        sample_episodes(labels, None, n_way=2, n_shot=3, n_query=3, n_episodes=1)
    with pytest.raises(InvalidInputError, match="n_shot must be >= 1"):
        sample_episodes(labels, None, n_way=2, n_shot=0, n_query=3, n_episodes=1)


def test_sample_shots_all_classes():
    labels = np.repeat(np.arange(6), 9)
    rows = sample_shots(labels, np.arange(6), n_shot=4, n_repeats=5, seed=2)
    assert rows.shape == (5, 6, 4)
    np.testing.assert_array_equal(labels[rows], np.broadcast_to(np.arange(6)[None, :, None], rows.shape))
    assert all(len(set(rows[r, c])) == 4 for r in range(5) for c in range(6))
    assert len({tuple(r.ravel()) for r in rows}) == 5           # repeats use different shots
    np.testing.assert_array_equal(rows, sample_shots(labels, np.arange(6), 4, 5, seed=2))
    with pytest.raises(InvalidInputError, match="fewer than n_shot=10"):
        sample_shots(labels, np.arange(6), n_shot=10, n_repeats=1)


def test_confidence_interval_formula():
    assert confidence_interval(np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(1.96 * 0.5 / 2)
    acc = np.random.default_rng(0).random(600)
    assert confidence_interval(acc) == pytest.approx(1.96 * acc.std() / np.sqrt(600))
    assert confidence_interval(np.full(10, 0.8)) == 0.0


@pytest.mark.parametrize("method", ["prototype", "simpleshot", "knn", "zero-shot"])
def test_batched_scores_equal_classifier_scores(method):
    rng = np.random.default_rng(5)
    b, c, k, m, d = 6, 5, 3, 11, 24
    support = unit(rng.standard_normal((b, c, k, d)))
    queries = unit(rng.standard_normal((b, m, d)))
    cv = unit(rng.standard_normal((b, c, d)))
    fast = BATCHED[method](support, queries, cv)
    slow = looped_scores(method, support, queries, cv if method == "zero-shot" else None)
    np.testing.assert_allclose(fast, slow, atol=2e-6)


def test_batched_accuracy_equals_per_episode_loop():
    x, y = clustered(15, 25, noise=1.0)
    eps = sample_episodes(y, None, n_way=5, n_shot=3, n_query=6, n_episodes=40, seed=4)
    for method in ("prototype", "simpleshot", "knn"):
        fast = evaluate_episodes(method, x, x, eps)
        slow = evaluate_episodes(method, x, x, eps, batched=False)
        np.testing.assert_array_equal(fast, slow)
        assert 0.3 < fast.mean() < 0.99                          # informative, not trivial


def test_unbatched_registered_method_falls_back_to_loop(monkeypatch):
    class CopyOfPrototype(PrototypeClassifier):
        name = "proto-copy"

    monkeypatch.setitem(CLASSIFIERS, "proto-copy", CopyOfPrototype)
    x, y = clustered(10, 12, noise=1.0, seed=1)
    eps = sample_episodes(y, None, n_way=4, n_shot=2, n_query=5, n_episodes=30, seed=0)
    np.testing.assert_array_equal(evaluate_episodes("proto-copy", x, x, eps),
                                  evaluate_episodes("prototype", x, x, eps))
    with pytest.raises(InvalidInputError, match="unknown method"):
        evaluate_episodes("nope", x, x, eps)


def test_run_modes_shapes_and_determinism():
    xs, ys = clustered(8, 12, seed=2)
    xq, yq = clustered(8, 5, seed=3, centre_seed=2)
    r1 = run_episodic("prototype", xs, ys, xq, yq, n_way=3, n_shot=2, n_query=4, n_episodes=25, seed=1)
    r2 = run_episodic("prototype", xs, ys, xq, yq, n_way=3, n_shot=2, n_query=4, n_episodes=25, seed=1)
    assert r1.accuracies.shape == (25,) and np.array_equal(r1.accuracies, r2.accuracies) and r1.seconds > 0
    assert r1.ci95 == pytest.approx(1.96 * r1.accuracies.std() / 5)
    a = run_all_classes("simpleshot", xs, ys, xq, yq, n_shot=3, n_repeats=4, seed=0)
    assert a.accuracies.shape == (4,) and 0 <= a.accuracy <= 1
    centres = unit(np.stack([xs[ys == c].mean(0) for c in range(8)]))
    z = run_zero_shot(xq, yq, centres)
    assert z.accuracies.shape == (40,) and z.accuracy > 0.3


def easyfsl_episode_accuracies(x: np.ndarray, eps, cosine: bool) -> np.ndarray:
    """easyfsl PrototypicalNetworks (identity backbone) on each episode, via easyfsl.utils.evaluate_on_one_task."""
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.utils import evaluate_on_one_task

    class CosinePrototypicalNetworks(PrototypicalNetworks):
        def forward(self, query_images):
            return self.cosine_distance_to_prototypes(self.compute_features(query_images))

    model = (CosinePrototypicalNetworks if cosine else PrototypicalNetworks)(torch.nn.Identity()).eval()
    feats = torch.from_numpy(x)
    n, k, q = eps.n_way, eps.n_shot, eps.n_query
    out = []
    with torch.no_grad():
        for e in range(eps.n_episodes):
            correct, total = evaluate_on_one_task(
                model, feats[eps.support[e].ravel()], torch.arange(n).repeat_interleave(k),
                feats[eps.query[e].ravel()], torch.arange(n).repeat_interleave(q))
            out.append(correct / total)
    return np.array(out)


def test_easyfsl_agreement_per_episode():
    x, y = clustered(20, 20, dim=32, noise=1.3, seed=9)
    eps = sample_episodes(y, None, n_way=5, n_shot=5, n_query=15, n_episodes=60, seed=0)
    ours_l2 = evaluate_episodes("prototype-l2", x, x, eps)
    np.testing.assert_allclose(ours_l2, easyfsl_episode_accuracies(x, eps, cosine=False), atol=1e-6)
    ours_cos = evaluate_episodes("prototype", x, x, eps)
    np.testing.assert_allclose(ours_cos, easyfsl_episode_accuracies(x, eps, cosine=True), atol=1e-6)
    assert 0.3 < ours_cos.mean() < 0.99


def test_floyd_path_uniform_and_distinct():
    """Small K from large classes (and N from many classes) take Floyd's branch of the sampler."""
    from fewshot.evaluation.episodes import _choose

    rng = np.random.default_rng(0)
    counts = np.array([50, 9, 120])
    pos = _choose(np.broadcast_to(counts, (20000, 3)), 3, rng)               # 3² < max count 120: Floyd
    assert pos.shape == (20000, 3, 3)
    assert all(len(set(p)) == 3 for p in pos.reshape(-1, 3)[:3000])
    assert np.all(pos < counts[None, :, None]) and np.all(pos >= 0)
    for col, n in enumerate(counts):
        freq = np.bincount(pos[:, col].ravel(), minlength=n)
        assert freq.min() > 0.8 * freq.mean() and freq.max() < 1.2 * freq.mean()
        first = np.bincount(pos[:, col, 0], minlength=n)                     # order is random too
        assert first.min() > 0.6 * first.mean()
    labels = np.repeat(np.arange(40), 3)
    eps = sample_episodes(labels, None, n_way=5, n_shot=1, n_query=2, n_episodes=8000, seed=0)  # 25 < 40: Floyd
    assert all(len(set(c)) == 5 for c in eps.classes)
    freq = np.bincount(eps.classes.ravel(), minlength=40)
    assert freq.min() > 0.85 * freq.mean() and freq.max() < 1.15 * freq.mean()


def test_knn_wide_support_uses_partition_and_matches_classifier():
    rng = np.random.default_rng(1)
    support = unit(rng.standard_normal((2, 30, 4, 16)))           # 120 support items > 64: partition branch
    queries = unit(rng.standard_normal((2, 7, 16)))
    np.testing.assert_allclose(BATCHED["knn"](support, queries, None, k=7),
                               looped_scores("knn", support, queries, None, k=7), atol=2e-6)
