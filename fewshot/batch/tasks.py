"""The work on one block of rows, shared by the streaming process and the Ray workers (so both give the same
rows): inputs → vectors → predictions (``ClassifyTask``) or embeddings (``EmbedTask``), as Arrow tables.

A block is a ``pyarrow.Table`` with an id column, an input column (texts, or image paths for an image
encoder) and, when it comes from ``fewshot.batch.io.read_blocks``, ``_file`` (the index of its file, which
names the file in errors and anchors relative image paths: they are read relative to the file's folder).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from fewshot.batch.io import FILE, ID, INPUT
from fewshot.encoders.base import Encoder
from fewshot.errors import FewShotError, InvalidInputError

if TYPE_CHECKING:
    from fewshot.engine import FewShotEngine
    from fewshot.engine.predictions import BatchPrediction

InputKind = Literal["auto", "text", "image"]
KINDS = ("auto", "text", "image")
TOP_K_TYPE = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))


def classify_schema(id_type: pa.DataType, top_k: int | None) -> pa.Schema:
    """Output columns of ``fewshot batch``: id, label (null when rejected), score, and top_k when asked."""
    fields = [pa.field(ID, id_type), pa.field("label", pa.string()), pa.field("score", pa.float64())]
    if top_k:
        fields.append(pa.field("top_k", TOP_K_TYPE))
    return pa.schema(fields)


def embed_schema(id_type: pa.DataType, dim: int) -> pa.Schema:
    """Output columns of ``fewshot embed``: id and embedding (fixed-size list of ``dim`` float32)."""
    return pa.schema([pa.field(ID, id_type), pa.field("embedding", pa.list_(pa.float32(), dim))])


def resolve_kind(encoder: Encoder, kind: str) -> str:
    """'auto' → 'text' when the encoder embeds text, else 'image'; a kind the encoder lacks is an error."""
    if kind not in KINDS:
        raise InvalidInputError(f"input kind must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        return "text" if "text" in encoder.modalities else "image"
    if kind not in encoder.modalities:
        raise InvalidInputError(f"encoder {encoder.name!r} does not embed {kind}s (it embeds "
                                f"{', '.join(sorted(encoder.modalities))})")
    return kind


class BlockEncoder:
    """A block's inputs → (n, dim) float32 vectors, exactly as ``engine.embed`` / ``encoder.encode`` gives them.

    ``files`` are the job's input paths (``_file`` indexes them); ``input_column`` / ``id_column`` name the
    block's columns (the defaults are ``read_blocks``')."""

    def __init__(self, encoder: Encoder, kind: str = "auto", files: Sequence[str] = (),
                 input_column: str = INPUT, id_column: str = ID):
        self.encoder, self.kind = encoder, resolve_kind(encoder, kind)
        self.files = list(files)
        self.input_column, self.id_column = input_column, id_column

    def inputs(self, block: pa.Table) -> list[Any]:
        for column in (self.input_column, self.id_column):
            if column not in block.column_names:
                raise InvalidInputError(f"a block lacks the column {column!r} (columns: {block.column_names})")
        texts = block.column(self.input_column)
        if texts.null_count:
            ids = block.column(self.id_column).filter(texts.is_null()).to_pylist()[:5]
            raise InvalidInputError(f"{self.where(block)}rows with ids {ids} have no {self.input_column!r} value")
        values = texts.to_pylist()
        if self.kind == "image" and FILE in block.column_names and self.files:
            folders = [os.path.dirname(self.files[i]) for i in block.column(FILE).to_pylist()]
            values = [v if os.path.isabs(v) else os.path.join(d, v) for v, d in zip(values, folders)]
        return values

    def where(self, block: pa.Table) -> str:
        """'FILE: ' naming the block's input files, or '' when it has none."""
        if FILE not in block.column_names or not self.files:
            return ""
        used = sorted(set(block.column(FILE).to_pylist()))
        names = [self.files[i] for i in used[:3]] + ([f"{len(used) - 3} more"] if len(used) > 3 else [])
        return ", ".join(names) + ": "

    def __call__(self, block: pa.Table) -> np.ndarray:
        """(n,) inputs of ``block`` → (n, dim) vectors; errors name the block's files."""
        values = self.inputs(block)
        try:
            if self.kind == "text":
                return self.encoder.encode_text(values, show_progress_bar=False)
            return self.encoder.encode_images(values, show_progress_bar=False)
        except FewShotError as exc:
            raise located(exc, self.where(block)) from None


def located(exc: FewShotError, where: str) -> FewShotError:
    """The same error type with ``where`` (e.g. 'FILE: ') in front of its message."""
    if not where:
        return exc
    try:
        return type(exc)(f"{where}{exc}")
    except TypeError:  # an error class with another constructor
        return exc


def _ids(block: pa.Table, column: str, id_type: pa.DataType | None) -> pa.Array:
    ids = block.column(column).combine_chunks()
    return ids if id_type is None or ids.type == id_type else ids.cast(id_type)


def top_k_column(batch: BatchPrediction) -> pa.ListArray:
    """A batch's (n, k) top labels and confidences → an n-row ``TOP_K_TYPE`` column, built in arrow (no Python
    object per row)."""
    n, k = batch.top_k_index.shape
    pairs = pa.StructArray.from_arrays([pa.array(batch.top_k_labels.reshape(-1), pa.string()),
                                        pa.array(batch.top_k_score.reshape(-1), pa.float64())],
                                       fields=list(TOP_K_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), pairs, type=TOP_K_TYPE)


class ClassifyTask:
    """Classify blocks with an engine: block → table (id, label, score[, top_k]) in the block's row order.

    Equal to ``engine.predict(inputs, top_k=top_k or 1, reject=reject)`` row by row."""

    def __init__(self, engine: FewShotEngine, *, files: Sequence[str] = (), top_k: int | None = None,
                 reject: bool = False, kind: str = "auto", id_type: pa.DataType | None = None,
                 input_column: str = INPUT, id_column: str = ID):
        from fewshot.engine.predictions import check_top_k

        if top_k is not None:
            check_top_k(top_k)
        self.engine, self.top_k, self.reject, self.id_type = engine, top_k, bool(reject), id_type
        self.encode = BlockEncoder(engine.encoder, kind, files, input_column, id_column)
        self.id_column = id_column

    def schema(self, id_type: pa.DataType) -> pa.Schema:
        return classify_schema(self.id_type or id_type, self.top_k)

    def __call__(self, block: pa.Table) -> pa.Table:
        ids = _ids(block, self.id_column, self.id_type)
        vectors = self.encode(block)
        try:
            batch = self.engine.predict_arrays(vectors, top_k=self.top_k or 1, reject=self.reject)
        except FewShotError as exc:
            raise located(exc, self.encode.where(block)) from None
        columns: dict[str, pa.Array] = {ID: ids, "label": pa.array(batch.labels, pa.string()),
                                        "score": pa.array(batch.scores, pa.float64())}
        if self.top_k:
            columns["top_k"] = top_k_column(batch)
        return pa.table(columns, schema=self.schema(ids.type))


class EmbedTask:
    """Embed blocks with an encoder: block → table (id, embedding) with (n, dim) float32 rows, L2-normalised."""

    def __init__(self, encoder: Encoder, *, files: Sequence[str] = (), kind: str = "auto",
                 id_type: pa.DataType | None = None, input_column: str = INPUT, id_column: str = ID):
        self.encoder, self.id_type, self.id_column = encoder, id_type, id_column
        self.encode = BlockEncoder(encoder, kind, files, input_column, id_column)

    def schema(self, id_type: pa.DataType) -> pa.Schema:
        return embed_schema(self.id_type or id_type, int(self.encoder.dim))

    def __call__(self, block: pa.Table) -> pa.Table:
        ids = _ids(block, self.id_column, self.id_type)
        vectors = np.ascontiguousarray(self.encode(block), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.encoder.dim):
            raise InvalidInputError(f"encoder {self.encoder.name!r} returned shape {vectors.shape} for "
                                    f"{len(ids)} inputs; expected ({len(ids)}, {self.encoder.dim})")
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                      int(self.encoder.dim))
        return pa.table({ID: ids, "embedding": embedding}, schema=self.schema(ids.type))
