"""SupportIndex: FAISS over support vectors plus a class table, add/remove without rebuilding.

Vectors live in a ``faiss.IndexIDMap2`` (stable int64 ids) over an exact inner-product index by default, or an
HNSW graph for large support sets (removal there is by tombstone + search-time filter, so nothing is rebuilt).
The class table keeps, per class: name, description, prompt vector (optional) and the running sum of its example
vectors, so prototypes are updated incrementally. Implements the ``fewshot.classifiers.Support`` view.

Saved as ``index.faiss`` + ``classes.json`` + ``arrays.npz``; no pickle. Atomic writes are done by
``fewshot.storage``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from .classifiers.base import check_vectors
from .errors import CorruptIndexError, DimensionMismatchError, DuplicateClassError, InvalidInputError, \
    UnknownClassError, VersionMismatchError

INDEX_FORMAT_VERSION = 1
INDEX_TYPES = ("flat", "hnsw")


@dataclass
class ClassEntry:
    """One row of the class table."""

    name: str
    description: str | None = None
    prompt_vector: np.ndarray | None = None          # (d,) float32, L2-normalised
    vector_sum: np.ndarray | None = None             # (d,) float64 running sum of example vectors
    ids: list[int] = field(default_factory=list)     # faiss ids of the class's examples, insertion order


class SupportIndex:
    """Labelled support vectors of dimension ``dim`` in FAISS, with a class table."""

    def __init__(self, dim: int, index_type: str = "flat", hnsw_m: int = 32):
        if int(dim) <= 0:
            raise InvalidInputError(f"dim must be positive, got {dim}")
        if index_type not in INDEX_TYPES:
            raise InvalidInputError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        self.dim = int(dim)
        self.index_type = index_type
        self.hnsw_m = int(hnsw_m)
        self.faiss_index = self._new_faiss_index()
        self._classes: dict[str, ClassEntry] = {}
        self._order: list[str] = []                  # class index → name
        self._id_to_class: dict[int, str] = {}
        self._tombstones: set[int] = set()           # HNSW only: removed ids still in the graph
        self._next_id = 0

    # ------------------------------------------------------------------ construction
    def _new_faiss_index(self) -> faiss.Index:
        if self.index_type == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = 128
            base.hnsw.efConstruction = 80
        else:
            base = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(base)

    # ------------------------------------------------------------------ class table
    @property
    def classes(self) -> list[str]:
        """Class names in column order of every score matrix."""
        return list(self._order)

    @property
    def n_classes(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __len__(self) -> int:
        """Number of live example vectors."""
        return len(self._id_to_class)

    def entry(self, name: str) -> ClassEntry:
        if name not in self._classes:
            raise UnknownClassError(f"unknown class {name!r}; known classes: {self._order[:20]}"
                                    + (" ..." if len(self._order) > 20 else ""))
        return self._classes[name]

    def add_class(self, name: str, description: str | None = None,
                  prompt_vector: np.ndarray | None = None) -> None:
        """Register an empty class (examples come through ``add_vectors``)."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"class name must be a non-empty string, got {name!r}")
        if name in self._classes:
            raise DuplicateClassError(f"class {name!r} already exists; use add_examples to extend it or "
                                      "remove_class first")
        if prompt_vector is not None:
            prompt_vector = check_vectors(prompt_vector, self.dim, "prompt_vector")[0].copy()
        self._classes[name] = ClassEntry(name, description, prompt_vector, np.zeros(self.dim, np.float64))
        self._order.append(name)

    def set_prompt_vector(self, name: str, prompt_vector: np.ndarray | None) -> None:
        entry = self.entry(name)
        entry.prompt_vector = None if prompt_vector is None else \
            check_vectors(prompt_vector, self.dim, "prompt_vector")[0].copy()

    def add_vectors(self, name: str, vectors: np.ndarray) -> np.ndarray:
        """Add (n, dim) example vectors to class ``name``; returns their (n,) int64 ids."""
        entry = self.entry(name)
        vectors = check_vectors(vectors, self.dim, "example vectors")
        ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
        self.faiss_index.add_with_ids(vectors, ids)
        self._next_id += len(vectors)
        entry.vector_sum = entry.vector_sum + vectors.astype(np.float64).sum(0)
        entry.ids.extend(int(i) for i in ids)
        for i in ids:
            self._id_to_class[int(i)] = name
        return ids

    def remove_ids(self, ids: np.ndarray) -> None:
        """Remove examples by id (no rebuild)."""
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        unknown = [i for i in ids if i not in self._id_to_class]
        if unknown:
            raise InvalidInputError(f"unknown example ids: {unknown[:10]}")
        vectors = self.reconstruct(ids)
        for i, v in zip(ids, vectors):
            entry = self._classes[self._id_to_class.pop(i)]
            entry.vector_sum = entry.vector_sum - v.astype(np.float64)
            entry.ids.remove(i)
            if not entry.ids:
                entry.vector_sum = np.zeros(self.dim, np.float64)  # no float drift for an emptied class
        self._remove_from_faiss(np.asarray(ids, np.int64))

    def _remove_from_faiss(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.index_type == "hnsw":  # HNSW graphs cannot delete: tombstone and filter at search time
            self._tombstones.update(int(i) for i in ids)
        else:
            self.faiss_index.remove_ids(faiss.IDSelectorBatch(ids))

    def remove_class(self, name: str) -> None:
        """Drop a class and all its examples (no rebuild)."""
        entry = self.entry(name)
        ids = np.asarray(entry.ids, np.int64)
        for i in entry.ids:
            del self._id_to_class[i]
        self._remove_from_faiss(ids)
        del self._classes[name]
        self._order.remove(name)

    def reconstruct(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """(n,) ids → (n, dim) stored vectors."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return self.faiss_index.reconstruct_batch(ids)

    def class_example_vectors(self, name: str) -> np.ndarray:
        """(n_c, dim) example vectors of one class, in insertion order."""
        return self.reconstruct(self.entry(name).ids)

    # ------------------------------------------------------------------ Support view
    def prototypes(self) -> np.ndarray:
        sums = np.stack([self._classes[n].vector_sum for n in self._order]) if self._order else \
            np.zeros((0, self.dim))
        counts = self.example_counts()
        return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def example_counts(self) -> np.ndarray:
        return np.array([len(self._classes[n].ids) for n in self._order], dtype=np.int64)

    def class_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((self.n_classes, self.dim), np.float32)
        mask = np.zeros(self.n_classes, bool)
        for c, n in enumerate(self._order):
            pv = self._classes[n].prompt_vector
            if pv is not None:
                vectors[c], mask[c] = pv, True
        return vectors, mask

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k examples by inner product: ((n, k) similarities, (n, k) class indices; -1 = none)."""
        queries = check_vectors(queries, self.dim, "queries")
        if self.index_type == "hnsw" and self._tombstones:
            params = faiss.SearchParametersHNSW(
                sel=faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64))),
                efSearch=max(128, k))
            sims, ids = self.faiss_index.search(queries, k, params=params)
        else:
            sims, ids = self.faiss_index.search(queries, k)
        col = {n: c for c, n in enumerate(self._order)}
        classes = np.full(ids.shape, -1, np.int64)
        found = ids >= 0
        classes[found] = [col[self._id_to_class[int(i)]] for i in ids[found]]
        sims = np.where(found, sims, -np.inf).astype(np.float32)
        return sims, classes

    def examples(self) -> tuple[np.ndarray, np.ndarray]:
        ids = [i for n in self._order for i in self._classes[n].ids]
        labels = np.array([c for c, n in enumerate(self._order) for _ in self._classes[n].ids], np.int64)
        return self.reconstruct(ids), labels

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write the index into an existing (fresh) ``directory``; returns the file names written."""
        directory = Path(directory)
        if self.index_type == "hnsw" and self._tombstones:
            self._compact_tombstones_for_save()
        faiss.write_index(self.faiss_index, str(directory / "index.faiss"))
        table = {
            "format_version": INDEX_FORMAT_VERSION, "dim": self.dim, "index_type": self.index_type,
            "hnsw_m": self.hnsw_m, "next_id": self._next_id,
            "classes": [{"name": n, "description": self._classes[n].description, "ids": self._classes[n].ids,
                         "has_prompt_vector": self._classes[n].prompt_vector is not None}
                        for n in self._order],
        }
        (directory / "classes.json").write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
        prompt = np.zeros((self.n_classes, self.dim), np.float32)
        for c, n in enumerate(self._order):
            if self._classes[n].prompt_vector is not None:
                prompt[c] = self._classes[n].prompt_vector
        sums = np.stack([self._classes[n].vector_sum for n in self._order]) if self._order else \
            np.zeros((0, self.dim), np.float64)
        with open(directory / "arrays.npz", "wb") as f:
            np.savez(f, prompt_vectors=prompt, vector_sums=sums)
        return ["index.faiss", "classes.json", "arrays.npz"]

    def _compact_tombstones_for_save(self) -> None:
        """HNSW: re-add live vectors once, at save time, so saved files hold no deleted vectors."""
        ids = np.array(sorted(self._id_to_class), np.int64)
        vectors = self.reconstruct(ids)
        self.faiss_index = self._new_faiss_index()
        if len(ids):
            self.faiss_index.add_with_ids(vectors, ids)
        self._tombstones.clear()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SupportIndex":
        """Read an index written by ``save``; typed errors for anything missing or inconsistent."""
        directory = Path(directory)
        try:
            table = json.loads((directory / "classes.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptIndexError(f"cannot read {directory / 'classes.json'}: {exc}") from None
        if table.get("format_version") != INDEX_FORMAT_VERSION:
            raise VersionMismatchError(f"index format version {table.get('format_version')!r} in {directory}; "
                                       f"this fewshot reads version {INDEX_FORMAT_VERSION}")
        try:
            index = cls(table["dim"], table["index_type"], table.get("hnsw_m", 32))
            index.faiss_index = faiss.read_index(str(directory / "index.faiss"))
            with np.load(directory / "arrays.npz", allow_pickle=False) as arrays:
                prompt, sums = arrays["prompt_vectors"], arrays["vector_sums"]
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise CorruptIndexError(f"cannot read the index in {directory}: {exc}") from None
        if index.faiss_index.d != index.dim or len(prompt) != len(table["classes"]):
            raise CorruptIndexError(f"index files in {directory} disagree (dimension or class count)")
        for c, row in enumerate(table["classes"]):
            entry = ClassEntry(row["name"], row.get("description"),
                               prompt[c].copy() if row.get("has_prompt_vector") else None,
                               sums[c].astype(np.float64), [int(i) for i in row["ids"]])
            index._classes[entry.name] = entry
            index._order.append(entry.name)
            for i in entry.ids:
                index._id_to_class[i] = entry.name
        index._next_id = int(table["next_id"])
        if index.faiss_index.ntotal != len(index._id_to_class):
            raise CorruptIndexError(f"index in {directory} holds {index.faiss_index.ntotal} vectors but its "
                                    f"class table lists {len(index._id_to_class)}")
        return index
