"""An engine built from ``fewshot embed`` output and labels, so a large support set never passes through one
encoding loop: embed it on Ray, then join the vectors with their labels by id here.

    engine = engine_from_embeddings("train_emb/", "train.csv")          # labels: column 'label', same ids
    engine.save("engine/")

Ids are matched as strings (so CSV ids, always read as text, match integer ids from Parquet). Embeddings
without a label are skipped and counted; a label whose id has no embedding, or a repeated id, is an error.
When both sides number rows by position, the labels must come from the same files the embeddings did.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from fewshot.batch.io import parquet_files as _parquet_files
from fewshot.batch.io import read_blocks, read_success
from fewshot.batch.jobs import plan_inputs
from fewshot.errors import DataFormatError, InvalidInputError


@dataclass
class LabelledVectors:
    """Vectors grouped by label: ``classes`` maps each label (in first-seen order) to (n, dim) float32 rows;
    ``encoder`` and ``dim`` come from the embed output; ``unlabelled`` counts embeddings without a label."""

    classes: dict[str, np.ndarray]
    encoder: str
    dim: int
    unlabelled: int

    @property
    def examples(self) -> int:
        return sum(len(v) for v in self.classes.values())


def read_labels(labels: Mapping[Any, str] | Sequence[str | os.PathLike] | str | os.PathLike, *,
                label_column: str = "label", id_column: str | None = None) -> tuple[dict[str, str], Any]:
    """{str(id): label} from a mapping or from CSV / JSONL / Parquet files (rows with no label are skipped),
    and the files' plan (None for a mapping)."""
    if isinstance(labels, Mapping):
        return {str(k): str(v) for k, v in labels.items()}, None
    plan = plan_inputs(labels, text_column=label_column, id_column=id_column, allow_null=True)
    out: dict[str, str] = {}
    for f, first in zip(plan.files, plan.offsets):
        for block in read_blocks(f, plan.columns, first_id=first, id_type=plan.id_type, block_rows=65536):
            for key, label in zip(block.column("id").to_pylist(), block.column("input").to_pylist()):
                if label is None:
                    continue
                key = str(key)
                if key in out:
                    raise DataFormatError(f"{f.path}: id {key!r} is labelled more than once; ids must be unique")
                out[key] = label
    if not out:
        raise DataFormatError(f"no row of {', '.join(plan.paths)} has a {label_column!r} value")
    return out, plan


def labelled_vectors(embeddings: str | os.PathLike, labels: Any, *, label_column: str = "label",
                     id_column: str | None = None) -> LabelledVectors:
    """Join a complete ``fewshot embed`` output folder with ``labels`` (see ``read_labels``) by id."""
    summary = read_success(embeddings, "embed")
    by_id, plan = read_labels(labels, label_column=label_column, id_column=id_column)
    if plan is not None and plan.columns.id is None and summary.get("id_column") is None \
            and plan.paths != summary.get("inputs"):
        raise DataFormatError(f"{embeddings} numbers its rows by position in {summary.get('inputs')}; the labels come "
                              f"from {plan.paths}: pass the same files as labels, or use an id column on both sides")
    dim = int(summary.get("dim") or 0)
    groups: dict[str, list[np.ndarray]] = {label: [] for label in dict.fromkeys(by_id.values())}
    found: set[str] = set()
    unlabelled = 0
    for path in _parquet_files(embeddings):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=65536, columns=["id", "embedding"]):
            emb = batch.column(1)
            dim = dim or emb.type.list_size
            vectors = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
            for i, key in enumerate(batch.column(0).to_pylist()):
                key = str(key)
                label = by_id.get(key)
                if label is None:
                    unlabelled += 1
                    continue
                if key in found:
                    raise DataFormatError(f"{path}: id {key!r} has more than one embedding")
                found.add(key)
                groups[label].append(vectors[i])
    missing = [k for k in by_id if k not in found]
    if missing:
        raise DataFormatError(f"{len(missing)} labelled ids have no embedding in {embeddings} (e.g. {missing[:5]}); "
                              "embed the same rows, with the same id column")
    classes = {label: np.stack(rows).astype(np.float32) for label, rows in groups.items()}
    return LabelledVectors(classes, str(summary.get("encoder") or ""), dim, unlabelled)


def engine_from_embeddings(embeddings: str | os.PathLike, labels: Any, *, label_column: str = "label",
                           id_column: str | None = None, encoder: Any = None, classifier: str = "prototype",
                           descriptions: Mapping[str, str] | None = None, **engine_options: Any):
    """A FewShotEngine whose classes hold the embedded rows of ``embeddings`` grouped by ``labels``; its encoder
    is the one that embedded them (``encoder`` overrides the name; it must have the same dim). ``descriptions``
    {label: text} adds class descriptions; ``engine_options`` go to ``FewShotEngine``."""
    from fewshot.engine import FewShotEngine

    data = labelled_vectors(embeddings, labels, label_column=label_column, id_column=id_column)
    name = encoder if encoder is not None else data.encoder
    if not name:
        raise InvalidInputError(f"{embeddings} does not record its encoder; pass encoder=")
    engine = FewShotEngine(encoder=name, classifier=classifier, **engine_options)
    for label, vectors in data.classes.items():
        engine.add_class(label, vectors=vectors, description=(descriptions or {}).get(label))
    return engine
