"""SupportIndex: FAISS over support vectors plus a class table, add/remove without rebuilding.

Index types (``SupportIndex(dim, index_type=...)`` or ``FewShotEngine(index_type=...)``):

``"flat"`` (default)
    ``faiss.IndexIDMap2`` (stable int64 ids) over an exact inner-product ``IndexFlatIP``. Exact search; removal
    compacts the vector array in place (no rebuild, but O(n) memory traffic per removal).
``"hnsw"``
    ``IndexIDMap2`` over ``IndexHNSWFlat`` (``hnsw_m`` = 32 links per node, ``hnsw_ef_construction`` = 80,
    ``hnsw_ef_search`` = 128) for large support sets: approximate, fast queries. HNSW graphs cannot delete, so
    removal is by tombstone + an ``IDSelector`` filter at search time (nothing is rebuilt). A save zeroes removed
    vectors in the graph and records their ids (no rebuild); only when tombstones outnumber live vectors does a save
    rebuild the graph once.
``"ivfpq"``
    ``IndexIVFPQ`` (inverted lists + product quantisation; faiss stores our ids natively, and a hash-table
    direct map gives O(1) removal and reconstruction). Memory per vector is ``pq_m`` bytes of code (default
    dim/8, i.e. 48 B for 384-d instead of 1,536 B) plus the id. IVF-PQ must be trained: until it is, vectors sit
    in an exact flat index; it trains itself once ``train_size`` vectors (default 20,000) have been added,
    on those first vectors, or when you call ``train()`` (optionally with your own training vectors). Training
    happens once, never on later adds or removals. ``ivf_nlist`` (default ≈ 4·√n of the training set) and
    ``nprobe`` (default 32) trade speed for recall. Caveat: stored vectors are PQ approximations, so
    ``reconstruct``/``examples()`` are approximate and ``remove_ids`` subtracts an approximate vector from
    the class's running sum (``remove_class`` and adds stay exact).

The class table keeps, per class: name, description, prompt vector (optional) and the running sum of its example
vectors, so prototypes are updated incrementally. Implements the ``fewshot.classifiers.Support`` view.

Saved as ``index.faiss`` + ``classes.json`` + ``arrays.npz``; no pickle. Atomic writes are done by
``fewshot.index.storage``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args

import faiss
import numpy as np

from fewshot._core import as_float_vectors, check_vectors
from fewshot.errors import CorruptIndexError, DuplicateClassError, InvalidInputError, UnknownClassError

INDEX_FORMAT_VERSION = 1
IndexType = Literal["flat", "hnsw", "ivfpq"]
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)


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

    def __init__(self, dim: int, index_type: IndexType = "flat", hnsw_m: int = 32, *, hnsw_ef_construction: int = 80,
                 hnsw_ef_search: int = 128, ivf_nlist: int | None = None,
                 pq_m: int | None = None, pq_nbits: int = 8, nprobe: int = 32, train_size: int = 20_000):
        if int(dim) <= 0:
            raise InvalidInputError(f"dim must be positive, got {dim}")
        if index_type not in INDEX_TYPES:
            raise InvalidInputError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        self.dim = int(dim)
        self.index_type = index_type
        self.hnsw_m = int(hnsw_m)
        self.hnsw_ef_construction = int(hnsw_ef_construction)
        self.hnsw_ef_search = int(hnsw_ef_search)  # may be changed at any time; used by every search
        # IVF-PQ settings (ignored by the other types)
        self.ivf_nlist = None if ivf_nlist is None else int(ivf_nlist)
        self.pq_m = int(pq_m) if pq_m is not None else _default_pq_m(self.dim)
        self.pq_nbits = int(pq_nbits)
        self.nprobe = int(nprobe)
        self.train_size = int(train_size)
        if index_type == "ivfpq" and (self.dim % self.pq_m or not 1 <= self.pq_nbits <= 16 or self.nprobe < 1):
            raise InvalidInputError(f"ivfpq needs pq_m dividing dim ({self.dim}), 1 <= pq_nbits <= 16 and "
                                    f"nprobe >= 1; got pq_m={self.pq_m}, pq_nbits={pq_nbits}, nprobe={nprobe}")
        self.faiss_index = self._new_faiss_index()
        self._classes: dict[str, ClassEntry] = {}
        self._order: list[str] = []                  # class index → name
        self._id_to_class: dict[int, str] = {}
        self._tombstones: set[int] = set()           # HNSW only: removed ids still in the graph
        self._next_id = 0
        self._examples: tuple[np.ndarray, np.ndarray] | None = None   # examples(), until the next change

    # ------------------------------------------------------------------ construction
    def _new_faiss_index(self) -> faiss.Index:
        """A fresh index; for "ivfpq" the untrained stage (an exact flat index, see ``train``)."""
        base: faiss.Index
        if self.index_type == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = self.hnsw_ef_search
            base.hnsw.efConstruction = self.hnsw_ef_construction
        else:
            base = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(base)

    @property
    def is_trained(self) -> bool:
        """False only for an "ivfpq" index that still holds its vectors in the exact staging index."""
        return self.index_type != "ivfpq" or isinstance(self.faiss_index, faiss.IndexIVFPQ)

    def train(self, vectors: np.ndarray | None = None) -> None:
        """IVF-PQ: train on ``vectors`` (default: the vectors added so far) and move every stored vector into
        the trained index. Runs once; later adds and removals never retrain or rebuild."""
        if self.index_type != "ivfpq":
            raise InvalidInputError(f"train() applies to index_type 'ivfpq', not {self.index_type!r}")
        if self.is_trained:
            raise InvalidInputError("this ivfpq index is already trained")
        ids = np.array(sorted(self._id_to_class), np.int64)
        stored = self.reconstruct(ids)
        sample = stored[: max(self.train_size, 1)] if vectors is None else \
            check_vectors(as_float_vectors(vectors, "training vectors"), self.dim, "training vectors")
        nlist = self.ivf_nlist or max(1, min(int(4 * np.sqrt(len(sample))), len(sample) // 39))
        need = max(nlist, 1 << self.pq_nbits)
        if len(sample) < need:
            raise InvalidInputError(f"ivfpq training needs at least {need} vectors (nlist={nlist}, "
                                    f"pq_nbits={self.pq_nbits}); got {len(sample)}")
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.pq_m, self.pq_nbits, faiss.METRIC_INNER_PRODUCT)
        # only used by polysemous search, and slow to train
        ivf.do_polysemous_training = False  # type: ignore[attr-defined]  # not in faiss's stubs
        started = time.perf_counter()
        ivf.train(np.ascontiguousarray(sample, np.float32))
        self.train_seconds = time.perf_counter() - started
        ivf.nprobe = min(self.nprobe, nlist)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # not in faiss's stubs
        if len(ids):
            ivf.add_with_ids(stored, ids)
        self._examples = None
        self.faiss_index = ivf  # swapped in only when complete: a failure above leaves the index as it was
        self._ivf_quantizer = quantizer  # keep the quantizer alive as long as the index

    # ------------------------------------------------------------------ class table
    @property
    def classes(self) -> list[str]:
        """Class names in column order of every score matrix."""
        return list(self._order)

    @property
    def n_classes(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._classes

    def __len__(self) -> int:
        """Number of live example vectors."""
        return len(self._id_to_class)

    def entry(self, name: str) -> ClassEntry:
        if name not in self:
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
            prompt_vector = check_vectors(as_float_vectors(prompt_vector, "prompt_vector"), self.dim,
                                          "prompt_vector")[0].copy()
        self._classes[name] = ClassEntry(name, description, prompt_vector, np.zeros(self.dim, np.float64))
        self._order.append(name)        # last, without examples: ``examples()`` stays as it is

    def set_prompt_vector(self, name: str, prompt_vector: np.ndarray | None) -> None:
        entry = self.entry(name)
        entry.prompt_vector = None if prompt_vector is None else \
            check_vectors(as_float_vectors(prompt_vector, "prompt_vector"), self.dim, "prompt_vector")[0].copy()

    def add_vectors(self, name: str, vectors: np.ndarray) -> np.ndarray:
        """Add (n, dim) example vectors to class ``name``; returns their (n,) int64 ids."""
        entry = self.entry(name)
        vectors = check_vectors(as_float_vectors(vectors, "example vectors"), self.dim, "example vectors")
        ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
        self.faiss_index.add_with_ids(vectors, ids)
        self._next_id += len(vectors)
        self._examples_added(name, vectors)
        entry.vector_sum = entry.vector_sum + vectors.astype(np.float64).sum(0)
        entry.ids.extend(int(i) for i in ids)
        for i in ids:
            self._id_to_class[int(i)] = name
        self._maybe_train()
        return ids

    def _examples_added(self, name: str, vectors: np.ndarray) -> None:
        """Keep ``examples()`` current when (n, dim) ``vectors`` join class ``name`` (call before its ids grow):
        the new rows go after the class's last row — one copy of the arrays instead of reading every vector back
        from FAISS after each change (lossy index types read back what FAISS stores: the cache is dropped)."""
        if self._examples is None or self.index_type == "ivfpq":
            self._examples = None
            return
        old_vectors, old_labels = self._examples
        c = self._order.index(name)
        at = int(np.searchsorted(old_labels, c, side="right"))
        new_vectors = np.concatenate([old_vectors[:at], vectors, old_vectors[at:]])
        self._keep_examples(new_vectors,
                            np.concatenate([old_labels[:at], np.full(len(vectors), c, np.int64), old_labels[at:]]))

    def _keep_examples(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Cache (m, dim) ``vectors`` and (m,) ``labels`` as ``examples()``, read-only (callers share them)."""
        vectors.setflags(write=False)
        labels.setflags(write=False)
        self._examples = (vectors, labels)

    def _maybe_train(self) -> None:
        """IVF-PQ auto-training once ``train_size`` vectors are stored (too few for the settings: stay exact)."""
        if not self.is_trained and len(self._id_to_class) >= self.train_size:
            try:
                self.train()
            except InvalidInputError:
                pass

    def add_many(self, names: list[str], vectors: np.ndarray) -> np.ndarray:
        """Bulk load: add (n, dim) vectors to existing classes ``names[i]`` in one FAISS call (much faster than
        one call per class for HNSW / IVF-PQ); returns the (n,) ids. Checked completely before anything changes."""
        vectors = check_vectors(as_float_vectors(vectors, "example vectors"), self.dim, "example vectors")
        names = list(names)
        if len(names) != len(vectors):
            raise InvalidInputError(f"add_many got {len(names)} names for {len(vectors)} vectors")
        for n in dict.fromkeys(names):
            self.entry(n)
        if not self.is_trained and len(self._id_to_class) < self.train_size < len(self._id_to_class) + len(vectors):
            k = self.train_size - len(self._id_to_class)  # fill up to train_size, train on those, add the rest
            return np.concatenate([self.add_many(names[:k], vectors[:k]), self.add_many(names[k:], vectors[k:])])
        ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
        self._examples = None
        self.faiss_index.add_with_ids(vectors, ids)
        self._next_id += len(vectors)
        order = np.argsort(np.asarray(names, dtype=object), kind="stable") if len(names) > 1 else np.arange(1)
        sorted_names = [names[i] for i in order]
        start = 0
        while start < len(order):  # one vector_sum update per class
            stop = start
            while stop < len(order) and sorted_names[stop] == sorted_names[start]:
                stop += 1
            rows = np.sort(order[start:stop])
            entry = self._classes[sorted_names[start]]
            entry.vector_sum = entry.vector_sum + vectors[rows].astype(np.float64).sum(0)
            entry.ids.extend(int(i) for i in ids[rows])
            start = stop
        self._id_to_class.update(zip(ids.tolist(), names))
        self._maybe_train()
        return ids

    def remove_ids(self, ids: np.ndarray | list[int]) -> None:
        """Remove examples by id (no rebuild)."""
        try:
            ids = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(f"ids must be integers: {exc}") from None
        unknown = [i for i in ids if i not in self._id_to_class]
        if unknown:
            raise InvalidInputError(f"unknown example ids: {unknown[:10]}")
        if len(set(ids)) != len(ids):  # checked before any change: a repeat used to fail half-way through
            raise InvalidInputError("ids contain duplicates; pass each id once")
        vectors = self.reconstruct(ids)
        self._examples = None
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
        elif isinstance(self.faiss_index, faiss.IndexIVF):  # hash-table direct map: O(len(ids)), ids stay
            self.faiss_index.remove_ids(faiss.IDSelectorArray(ids))
        else:
            self.faiss_index.remove_ids(faiss.IDSelectorBatch(ids))

    def remove_class(self, name: str) -> None:
        """Drop a class and all its examples (no rebuild)."""
        entry = self.entry(name)
        ids = np.asarray(entry.ids, np.int64)
        for i in entry.ids:
            del self._id_to_class[i]
        self._remove_from_faiss(ids)
        c = self._order.index(name)
        del self._classes[name]
        self._order.remove(name)
        if self._examples is not None:      # drop the class's rows; the classes after it move up one index
            old_vectors, old_labels = self._examples
            keep = old_labels != c
            self._keep_examples(old_vectors[keep], old_labels[keep] - (old_labels[keep] > c))

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
        sums = np.stack([cast(np.ndarray, self._classes[n].vector_sum) for n in self._order]) if self._order else \
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
        queries = check_vectors(as_float_vectors(queries, "queries"), self.dim, "queries")
        if self.index_type == "hnsw":
            # faiss's stubs lack SearchParametersHNSW
            params = faiss.SearchParametersHNSW(efSearch=max(self.hnsw_ef_search, k))  # type: ignore[attr-defined]
            if self._tombstones:
                keep = faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64))
                params.sel = selector = faiss.IDSelectorNot(keep)  # noqa: F841 (python refs keep them alive)
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
        """((m, dim) vectors, (m,) class indices), class by class in insertion order: read-only arrays, kept until
        the next change (calibration reads them several times per fit)."""
        if self._examples is None:
            ids = [i for n in self._order for i in self._classes[n].ids]
            labels = np.array([c for c, n in enumerate(self._order) for _ in self._classes[n].ids], np.int64)
            self._keep_examples(self.reconstruct(ids), labels)
        return cast(tuple, self._examples)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> list[str]:
        """Write the index into an existing (fresh) ``directory``; returns the file names written."""
        directory = Path(directory)
        if self.index_type == "hnsw" and self._tombstones:
            if len(self._tombstones) > len(self._id_to_class):
                self._compact_tombstones_for_save()  # mostly dead: one rebuild, amortised over the removals
            else:
                self._erase_tombstoned_vectors()
        faiss.write_index(self.faiss_index, str(directory / "index.faiss"))
        table = {
            "format_version": INDEX_FORMAT_VERSION, "dim": self.dim, "index_type": self.index_type,
            "hnsw_m": self.hnsw_m, "hnsw_ef_construction": self.hnsw_ef_construction,
            "hnsw_ef_search": self.hnsw_ef_search, "next_id": self._next_id,
            "ivfpq": {"ivf_nlist": self.ivf_nlist, "pq_m": self.pq_m, "pq_nbits": self.pq_nbits,
                      "nprobe": self.nprobe, "train_size": self.train_size},
            "classes": [{"name": n, "description": self._classes[n].description, "ids": self._classes[n].ids,
                         "has_prompt_vector": self._classes[n].prompt_vector is not None}
                        for n in self._order],
        }
        (directory / "classes.json").write_text(json.dumps(table, ensure_ascii=False), encoding="utf-8")
        prompt = np.zeros((self.n_classes, self.dim), np.float32)
        for c, n in enumerate(self._order):
            if self._classes[n].prompt_vector is not None:
                prompt[c] = self._classes[n].prompt_vector
        sums = np.stack([cast(np.ndarray, self._classes[n].vector_sum) for n in self._order]) if self._order else \
            np.zeros((0, self.dim), np.float64)
        with open(directory / "arrays.npz", "wb") as f:
            np.savez(f, prompt_vectors=prompt, vector_sums=sums,
                     tombstones=np.array(sorted(self._tombstones), np.int64))
        return ["index.faiss", "classes.json", "arrays.npz"]

    def _erase_tombstoned_vectors(self) -> None:
        """HNSW: overwrite removed vectors with zeros in the graph's storage (no rebuild), so saved files hold no
        deleted vector values; their graph nodes stay as routing nodes and stay filtered at search time."""
        hnsw = cast(faiss.IndexHNSW, faiss.downcast_index(cast(faiss.IndexIDMap2, self.faiss_index).index))
        storage = cast(faiss.IndexFlat, faiss.downcast_index(hnsw.storage))
        xb = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dim).reshape(storage.ntotal, self.dim)
        id_map = faiss.vector_to_array(cast(faiss.IndexIDMap2, self.faiss_index).id_map)
        xb[np.isin(id_map, np.fromiter(self._tombstones, np.int64))] = 0.0
        self._examples = None

    def _compact_tombstones_for_save(self) -> None:
        """HNSW: re-add live vectors once (when most of the graph is tombstones), so the graph stays small."""
        ids = np.array(sorted(self._id_to_class), np.int64)
        vectors = self.reconstruct(ids)
        self._examples = None
        self.faiss_index = self._new_faiss_index()
        if len(ids):
            self.faiss_index.add_with_ids(vectors, ids)
        self._tombstones.clear()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SupportIndex:
        """Read an index written by ``save``; typed errors for anything missing or inconsistent."""
        directory = Path(directory)
        from fewshot.index.storage import read_json_object
        table = read_json_object(directory / "classes.json", INDEX_FORMAT_VERSION)
        try:
            index = cls._load(directory, table)
        except CorruptIndexError:
            raise
        except (OSError, RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # a table that parses as JSON but has wrong types/keys is corrupt, never a bare Python error
            raise CorruptIndexError(f"cannot read the index in {directory}: {type(exc).__name__}: {exc}") from None
        return index

    @classmethod
    def _load(cls, directory: Path, table: dict) -> SupportIndex:
        opts = table.get("ivfpq") or {}
        index = cls(int(table["dim"]), table["index_type"], int(table.get("hnsw_m", 32)),
                    hnsw_ef_construction=int(table.get("hnsw_ef_construction", 80)),
                    hnsw_ef_search=int(table.get("hnsw_ef_search", 128)),
                    ivf_nlist=opts.get("ivf_nlist"), pq_m=opts.get("pq_m"), pq_nbits=int(opts.get("pq_nbits", 8)),
                    nprobe=int(opts.get("nprobe", 32)), train_size=int(opts.get("train_size", 20_000)))
        index.faiss_index = faiss.read_index(str(directory / "index.faiss"))
        expected = {"flat": (faiss.IndexIDMap2,), "hnsw": (faiss.IndexIDMap2,),
                    "ivfpq": (faiss.IndexIDMap2, faiss.IndexIVFPQ)}[index.index_type]
        if not isinstance(index.faiss_index, expected):
            raise CorruptIndexError(f"index.faiss in {directory} is a {type(index.faiss_index).__name__}, not "
                                    f"what index_type {index.index_type!r} writes")
        if isinstance(index.faiss_index, faiss.IndexIVF):
            index.faiss_index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # no stub
        with np.load(directory / "arrays.npz", allow_pickle=False) as arrays:
            prompt = np.asarray(arrays["prompt_vectors"], np.float32)
            sums = np.asarray(arrays["vector_sums"], np.float64)
            tombstones = {int(i) for i in arrays["tombstones"]} if "tombstones" in arrays.files else set()
        if tombstones and index.index_type != "hnsw":
            raise CorruptIndexError(f"index in {directory} lists removed ids but is not an HNSW index")
        rows = table["classes"]
        if index.faiss_index.d != index.dim or len(prompt) != len(rows) or len(sums) != len(rows) or \
                (len(rows) and (prompt.shape[1:] != (index.dim,) or sums.shape[1:] != (index.dim,))):
            raise CorruptIndexError(f"index files in {directory} disagree (dimension or class count)")
        for c, row in enumerate(rows):
            name, description = row["name"], row.get("description")
            if not isinstance(name, str) or not name.strip() or name in index._classes or \
                    not isinstance(description, (str, type(None))):
                raise CorruptIndexError(f"class table in {directory} has a bad or repeated class name {name!r}")
            entry = ClassEntry(name, description, prompt[c].copy() if row.get("has_prompt_vector") else None,
                               sums[c].copy(), [int(i) for i in row["ids"]])
            index._classes[entry.name] = entry
            index._order.append(entry.name)
            for i in entry.ids:
                if i in index._id_to_class or not 0 <= i < int(table["next_id"]):
                    raise CorruptIndexError(f"class table in {directory} lists example id {i} twice or out of range")
                index._id_to_class[i] = entry.name
        index._next_id = int(table["next_id"])
        if tombstones & set(index._id_to_class):
            raise CorruptIndexError(f"index in {directory} lists live ids as removed")
        index._tombstones = tombstones
        if index.faiss_index.ntotal != len(index._id_to_class) + len(tombstones):
            raise CorruptIndexError(f"index in {directory} holds {index.faiss_index.ntotal} vectors but its "
                                    f"class table lists {len(index._id_to_class)} (+{len(tombstones)} removed)")
        if isinstance(index.faiss_index, faiss.IndexIDMap2):
            stored = faiss.vector_to_array(index.faiss_index.id_map)
            if set(stored.tolist()) != set(index._id_to_class) | tombstones:
                raise CorruptIndexError(f"index.faiss in {directory} holds other ids than its class table")
        return index


def _default_pq_m(dim: int) -> int:
    """PQ sub-quantisers: about dim/8 (8 dims → 1 byte each), adjusted down to a divisor of dim."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m
