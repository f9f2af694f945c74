"""Tip-Adapter-F style fine-tune of the cache: the fusion classifier with learnable keys and class vectors.

Starts from ``FusionClassifier`` (its prior weight rho and cache weight alpha chosen by leave-one-out on the
support), then treats the cache keys ``K`` (m, d; init = support vectors) and the class centroids ``M`` (C, d;
init = the fused centroids ``normalise(n_c·p_c + rho·t_c)``) as parameters::

    score_c(q) = (1 - alpha) · cos(q, M_c) + alpha · (1/beta) · log mean_{j in c} exp(beta · q · K_j)

and minimises cross-entropy of ``logit_scale · score`` on the support examples — each example scored against
the cache *without its own key* (as Tip-Adapter-F trains on its few-shot set, but leave-one-out, so the
trivial self-match teaches nothing) — plus ``reg · (|K - K0|² + |M - M0|²)`` toward the initial values.
Full-batch Adam, ``epochs`` steps, learning rate ``lr``: fixed a priori (Tip-Adapter-F's lr 1e-3; 50 steps),
not tuned on test data. With 0 shots there is nothing to train: identical to zero-shot.
"""
from __future__ import annotations

from typing import cast

import numpy as np

from fewshot._core import torch_threads
from fewshot.classifiers.base import Classifier, Support
from fewshot.classifiers.fusion import FusionClassifier, loo_rows
from fewshot.errors import InvalidInputError, NotFittedError


class TipAdapterFClassifier(Classifier):
    """Fusion with fine-tuned cache keys and class centroids (Tip-Adapter-F style).

    Args:
        epochs: full-batch Adam steps; lr: Adam learning rate; reg: L2 pull toward the initial keys/centroids.
        beta: cache sharpness (as in fusion); seed: torch seed (training is deterministic given it).
    """

    name = "tip-adapter"

    config_keys = ("epochs", "lr", "reg", "beta", "seed")

    def __init__(self, epochs: int = 50, lr: float = 1e-3, reg: float = 1.0, beta: float = 20.0, seed: int = 0):
        super().__init__()
        if int(epochs) < 0:
            raise InvalidInputError(f"epochs must be >= 0, got {epochs}")
        if lr <= 0:
            raise InvalidInputError(f"lr must be > 0, got {lr}")
        if reg < 0:
            raise InvalidInputError(f"reg must be >= 0, got {reg}")
        self.epochs, self.lr, self.reg = int(epochs), float(lr), float(reg)
        self.beta, self.seed = float(beta), int(seed)

    def _fit(self, support: Support) -> None:
        fusion = cast(FusionClassifier, FusionClassifier(beta=self.beta).fit(support))
        self.fusion_ = fusion
        self.alpha_ = fusion.cache_weight_
        self.rho_ = fusion.prior_weight_
        self.logit_scale = fusion.logit_scale
        self.labels_ = fusion.labels_
        self.has_text_ = fusion.has_text_
        C = support.n_classes
        # initial centroids: the fused class vectors (zero-shot vector when rho = inf or no examples)
        if np.isinf(self.rho_):
            m0 = np.where(self.has_text_[:, None], fusion.text_, fusion.sums_)
        else:
            m0 = fusion.sums_ + self.rho_ * self.has_text_[:, None] * fusion.text_
            m0 = np.where((fusion.counts_ == 0)[:, None], fusion.text_, m0)
        self.valid_ = (fusion.counts_ > 0) | self.has_text_
        m0 = m0 / np.maximum(np.linalg.norm(m0, axis=1, keepdims=True), 1e-12)
        self.M_ = m0.astype(np.float32)
        self.K_ = fusion.keys_.copy()
        if self.epochs and len(self.labels_) >= 2 and len(np.unique(self.labels_)) >= 2:
            self.M_, self.K_ = self._train(self.M_, self.K_, C)

    def _train(self, m0: np.ndarray, k0: np.ndarray, C: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        torch.manual_seed(self.seed)
        with torch_threads(1):
            X = torch.from_numpy(k0.copy())
            y = torch.from_numpy(np.array(self.labels_))   # a copy: the support may hand out read-only labels
            M0, K0 = torch.from_numpy(m0.copy()), torch.from_numpy(k0.copy())
            M, K = torch.nn.Parameter(M0.clone()), torch.nn.Parameter(K0.clone())
            onehot = torch.nn.functional.one_hot(y, C).float()
            counts = onehot.sum(0)
            valid = torch.from_numpy(self.valid_)
            opt = torch.optim.Adam([M, K], lr=self.lr)
            m = len(y)
            # each step scores a (rows, m) block: every example while m² ≤ MAX_LOO_ENTRIES, else a fresh random
            # sample of rows per step (fusion.loo_rows's size), so memory stays bounded on large supports
            take = len(loo_rows(m))
            generator = torch.Generator().manual_seed(self.seed)
            for _ in range(self.epochs):
                rows = torch.arange(m) if take == m else torch.randperm(m, generator=generator)[:take]
                Xb, yb, own = X[rows], y[rows], onehot[rows]
                self_mask = torch.zeros(len(rows), m, dtype=torch.bool)
                self_mask[torch.arange(len(rows)), rows] = True
                cent = Xb @ torch.nn.functional.normalize(M, dim=1).T
                z = self.beta * (Xb @ K.T)
                z = z.masked_fill(self_mask, float("-inf"))
                zmax = z.max(1, keepdim=True).values.detach()
                sums = torch.exp(z - zmax) @ onehot
                n = counts.unsqueeze(0) - own
                has = n > 0
                cache = (torch.log(sums.clamp_min(1e-30)) + zmax - torch.log(n.clamp_min(1))) / self.beta
                s = torch.where(has, (1 - self.alpha_) * cent + self.alpha_ * cache, cent)
                s = s.masked_fill(~valid.unsqueeze(0), -1.0)
                loss = torch.nn.functional.cross_entropy(self.logit_scale * s, yb) + self.reg * (
                    ((M - M0) ** 2).sum() + ((K - K0) ** 2).sum()) / len(y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return M.detach().numpy().astype(np.float32), K.detach().numpy().astype(np.float32)

    def _scores(self, queries: np.ndarray) -> np.ndarray:
        from fewshot.classifiers.fusion import cache_scores

        q = queries.astype(np.float64)
        Mn = self.M_ / np.maximum(np.linalg.norm(self.M_, axis=1, keepdims=True), 1e-12)
        cent = np.where(self.valid_[None, :], q @ Mn.T.astype(np.float64), -1.0)
        if self.alpha_ == 0 or not len(self.labels_):
            return cent.astype(np.float32)
        cache, has = cache_scores(q @ self.K_.T.astype(np.float64), self.labels_, len(self.valid_), self.beta)
        return np.where(has, (1 - self.alpha_) * cent + self.alpha_ * cache, cent).astype(np.float32)


    def state(self) -> dict[str, np.ndarray]:
        return {"M": self.M_, "K": self.K_, "labels": self.labels_, "valid": self.valid_,
                "alpha": np.float64(self.alpha_), "rho": np.float64(self.rho_),
                "logit_scale": np.float64(self.logit_scale)}

    def restore(self, support: Support, state: dict[str, np.ndarray]) -> TipAdapterFClassifier:
        """Rebind with the learned keys/centroids (no retraining); the support must have the same classes."""
        if support.n_classes == 0:
            raise NotFittedError("no classes: add at least one class before classifying")
        M = self.saved_class_rows(state, "M", support, "centroids")
        self.support = support
        self.M_, self.K_ = M, np.asarray(state["K"], np.float32)
        self.labels_ = np.asarray(state["labels"], np.int64)
        self.valid_ = np.asarray(state["valid"], bool)
        self.alpha_, self.rho_ = float(state["alpha"]), float(state["rho"])
        self.logit_scale = float(state["logit_scale"])
        return self
