"""What every classifier reads (a ``Support`` view) and the small base every method extends.

Classifiers never call encoders: they score already-embedded queries against support data.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, cast

import numpy as np

from fewshot._core import check_vectors, softmax
from fewshot.errors import InvalidInputError, NotFittedError


class Support(Protocol):
    """Read-only view of labelled support data over C classes in a d-dim space.

    Implemented by ``fewshot.index.support_index.SupportIndex`` (FAISS) and ``ArraySupport`` (plain arrays, benchmarks).
    """

    dim: int

    @property
    def n_classes(self) -> int: ...

    def prototypes(self) -> np.ndarray:
        """(C, d) float32 mean of each class's example vectors (zeros for a class without examples)."""

    def example_counts(self) -> np.ndarray:
        """(C,) int64 number of examples per class."""

    def class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """((C, d) float32 L2-normalised text-prompt vectors, (C,) bool mask of classes that have one)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k support examples by inner product: ((n, k) float32 similarities, (n, k) int64 class
        indices, -1 where fewer than k examples exist)."""

    def examples(self) -> tuple[np.ndarray, np.ndarray]:
        """All example vectors and their class indices: ((m, d) float32, (m,) int64)."""


class ArraySupport:
    """A ``Support`` over in-memory arrays: vectors (m, d), labels (m,) in [0, C), optional class vectors (C, d)."""

    def __init__(self, vectors: np.ndarray, labels: np.ndarray, n_classes: int | None = None,
                 class_vectors: np.ndarray | None = None, class_vector_mask: np.ndarray | None = None):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(labels), -1) \
            if len(labels) else np.zeros((0, class_vectors.shape[1] if class_vectors is not None else 0), np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._n = int(n_classes if n_classes is not None else (self.labels.max() + 1 if len(self.labels) else
                                                               len(cast(np.ndarray, class_vectors))))
        self.dim = int(self.vectors.shape[1]) if self.vectors.size else int(cast(np.ndarray, class_vectors).shape[1])
        if class_vectors is None:
            self._cv = np.zeros((self._n, self.dim), np.float32)
            self._mask = np.zeros(self._n, bool)
        else:
            self._cv = np.asarray(class_vectors, np.float32)
            self._mask = np.ones(self._n, bool) if class_vector_mask is None else np.asarray(class_vector_mask, bool)

    @property
    def n_classes(self) -> int:
        return self._n

    def prototypes(self) -> np.ndarray:
        from scipy.sparse import csr_matrix

        membership = csr_matrix((np.ones(len(self.labels)), (self.labels, np.arange(len(self.labels)))),
                                shape=(self._n, len(self.labels)))           # (C, m) one-hot
        sums = np.asarray(membership @ self.vectors.astype(np.float64))
        counts = self.example_counts()
        return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def example_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self._n).astype(np.int64)

    def class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cv, self._mask

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self.vectors.T
        k_eff = min(k, sims.shape[1])
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k_eff]
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_c = np.full((len(queries), k), -1, np.int64)
        out_s[:, :k_eff] = np.take_along_axis(sims, order, axis=1)
        out_c[:, :k_eff] = self.labels[order]
        return out_s, out_c

    def examples(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors, self.labels


class Classifier(ABC):
    """Scores (n, C) of queries against the classes of a ``Support``; higher = more likely.

    Scores are cosine-like (roughly in [-1, 1]) so they are comparable across inputs; probabilities are
    ``softmax(scores * logit_scale)``.
    """

    name: str = "base"
    logit_scale: float = 20.0

    def __init__(self) -> None:
        self.support: Support | None = None

    def fit(self, support: Support) -> Classifier:
        """Bind to (and precompute from) a support view. Cheap for training-free methods."""
        if support.n_classes == 0:
            raise NotFittedError("no classes: add at least one class before classifying")
        self.support = support
        self._fit(support)
        return self

    def _fit(self, support: Support) -> None:  # noqa: B027 - an optional hook, empty by default
        """Subclass hook: precompute from support."""

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) L2-normalised queries → (n, C) float32 scores."""
        if self.support is None:
            raise NotFittedError(f"{self.name} classifier is not fitted; call fit(support) first")
        queries = check_vectors(queries, self.support.dim, "queries")
        return self._scores(queries).astype(np.float32, copy=False)

    @abstractmethod
    def _scores(self, queries: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, queries: np.ndarray) -> np.ndarray:
        """(n, d) → (n, C) probabilities, softmax(scores · logit_scale)."""
        return softmax(self.scores(queries) * self.logit_scale)

    #: constructor arguments that define the method, read back from attributes of the same name
    config_keys: tuple[str, ...] = ()

    def get_config_dict(self) -> dict:
        """JSON-able constructor arguments (saved with an engine): ``config_keys`` read from the attributes.
        ``type(self)(**get_config_dict())`` builds an unfitted twin (``clone``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
                ((k, getattr(self, k)) for k in self.config_keys)}

    def config(self) -> dict:
        """Alias of ``get_config_dict`` (the name older fewshot code calls)."""
        return self.get_config_dict()

    def clone(self) -> Classifier:
        """A new, unfitted classifier with the same configuration (like ``sklearn.base.clone``): calibration
        and open-set folds fit clones of the live classifier, so a custom subclass works there too."""
        return type(self)(**self.get_config_dict())

    def clone_for_folds(self) -> Classifier:
        """An unfitted classifier for leave-one-out folds of the support this one was fitted on: ``clone()``, unless
        a subclass fixes there what its fit chose by its own cross-validation (so each fold does not repeat it)."""
        return self.clone()

    def held_out_scores(self, support: Support, folds: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """Leave-one-block-out scores: for each fold ``(block, rest)`` — (b,) indices into ``support.examples()``
        and an (m,) bool mask of the examples to fit on — the (b, C) scores of the block's examples by a
        ``clone_for_folds()`` of this classifier fitted on ``rest``. Training-free methods may override it with a
        closed form that gives the same scores (``PrototypeClassifier``)."""
        vectors, labels = support.examples()
        class_vectors, mask = support.class_vectors()
        return [self.clone_for_folds().fit(ArraySupport(vectors[rest], labels[rest], support.n_classes,
                                                        class_vectors, mask)).scores(vectors[block])
                for block, rest in folds]

    def state(self) -> dict[str, np.ndarray]:
        """Learned arrays to save with an engine (empty for training-free methods)."""
        return {}

    @staticmethod
    def saved_class_rows(state: dict[str, np.ndarray], key: str, support: Support, what: str) -> np.ndarray:
        """``state[key]`` as float32 (C, d) rows, one per class of ``support``; InvalidInputError when a save
        holds another class count or dimension (``what`` names the array in the message)."""
        rows = np.asarray(state[key], np.float32)
        if rows.shape != (support.n_classes, support.dim):
            raise InvalidInputError(f"saved {what} have shape {rows.shape}, but the support has {support.n_classes} "
                                    f"classes of dim {support.dim}; call fit() to retrain")
        return rows

    def restore(self, support: Support, state: dict[str, np.ndarray]) -> Classifier:
        """Rebind to ``support`` after loading, reusing learned ``state`` instead of training again.
        Training-free methods just refit; learned methods override this."""
        return self.fit(support)
