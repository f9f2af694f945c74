"""Corpus files in, Parquet out: bounded-memory readers and an output folder that never looks complete early.

Inputs are CSV (a header row; values read as strings; an empty field is a missing value; quoted fields may span
lines), JSONL (one object a line; a missing key is a missing value) or Parquet, named by paths, globs or folders
(a folder stands for its CSV / JSONL / Parquet files, names starting with ``_`` or ``.`` skipped). ``.gz``,
``.bz2``, ``.zst`` and ``.lz4`` compressed CSV / JSONL are read as they are. CSV and JSONL are parsed lazily by
the standard library (pyarrow's streaming CSV / JSON readers read ahead of a slow consumer without bound);
Parquet is read a row group at a time.

Every file is checked before any work is done (``inspect_file``: the columns exist, the file has rows, no row
lacks its text or id, the id column holds integers or strings) and read again in blocks of at most
``block_rows`` rows (``read_blocks``), so memory stays bounded whatever the input size. Rows without an id
column are numbered by their position in the whole input (0-based, files in the order given, globs sorted).

Output protocol (``StagedOutput``): a job writes into a hidden staging folder beside OUT_DIR
(``.NAME.incomplete-XXXXXXXX``), writes ``_SUCCESS`` (a JSON summary) into it last and renames it to OUT_DIR.
So OUT_DIR either does not exist or is complete and holds ``_SUCCESS``; a failed job removes its staging
folder, and one killed outright leaves only that hidden folder, which is safe to delete. Readers of a Parquet
folder (pyarrow, pandas, Spark, Ray) skip names starting with ``_``.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fewshot.errors import DataFormatError, InputFileError, InvalidInputError

#: file name suffix → format
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
SUCCESS = "_SUCCESS"
#: columns of the blocks ``read_blocks`` yields: the row id, its text (or image path), the file's index
ID, INPUT, FILE = "id", "input", "_file"
_MAX_FIELD_CHARS = 1 << 26  # the csv module's limit on one field (its default, 128 KiB, is too small for documents)


@dataclass(frozen=True)
class InputFile:
    """One input file: absolute ``path``, ``format`` ('csv' | 'jsonl' | 'parquet'), position in the job."""

    path: str
    format: str
    index: int


@dataclass(frozen=True)
class Columns:
    """Which columns to read: ``text`` (texts, or image paths for an image engine) and an optional ``id``.
    ``allow_null`` keeps rows whose text is missing (as nulls) instead of failing on them."""

    text: str = "text"
    id: str | None = None
    allow_null: bool = False


@dataclass(frozen=True)
class FileInfo:
    """What ``inspect_file`` learned: the number of rows and the id column's type (int64 or string)."""

    rows: int
    id_type: pa.DataType


def format_of(path: str) -> str | None:
    """The format a file name says (compression suffixes stripped), or None."""
    name = path.lower()
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return FORMATS.get(os.path.splitext(name)[1])


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[InputFile]:
    """Paths, globs (sorted) and folders → the job's files, each once, in order. Typed errors for a pattern that
    matches nothing, a file of unknown format, an unreadable or empty file."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths: list[str] = []
    for item in inputs:
        pattern = os.fspath(item)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise DataFormatError(f"no file matches {pattern!r}")
        else:
            matches = [pattern]
        for match in matches:
            if os.path.isdir(match):
                found = sorted(os.path.join(match, n) for n in os.listdir(match)
                               if not n.startswith(("_", ".")) and format_of(n)
                               and os.path.isfile(os.path.join(match, n)))
                if not found:
                    raise DataFormatError(f"folder {match} holds no CSV, JSONL or Parquet file")
                paths.extend(found)
            elif not glob.has_magic(pattern) or format_of(match):
                paths.append(match)
        if glob.has_magic(pattern) and not any(format_of(m) or os.path.isdir(m) for m in matches):
            raise DataFormatError(f"no CSV, JSONL or Parquet file matches {pattern!r}")
    if not paths:
        raise DataFormatError("no input files given")
    files: list[InputFile] = []
    seen: set[str] = set()
    for path in paths:
        path = os.path.abspath(path)
        if path in seen:
            continue
        seen.add(path)
        fmt = format_of(path)
        if fmt is None:
            raise InputFileError(path, f"unknown input format; use .csv, .jsonl or .parquet "
                                  f"(optionally compressed {', '.join(COMPRESSIONS)} for CSV / JSONL)")
        _check_readable(path)
        files.append(InputFile(path, fmt, len(files)))
    return files


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise InputFileError(path, "no such file")
    if not os.path.isfile(path):
        raise InputFileError(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if os.path.getsize(path) == 0:
        raise InputFileError(path, "the file is empty (0 bytes); every input file needs rows")


# ------------------------------------------------------------------------------------------------ reading


def _is_string(t: pa.DataType) -> bool:
    """string, large_string, or a dictionary of either."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _normal_id_type(t: pa.DataType, where: str, column: str) -> pa.DataType:
    if pa.types.is_integer(t):
        return pa.int64()
    if _is_string(t):
        return pa.string()
    if pa.types.is_null(t):  # JSON: no value in the first block; the full scan finds the first missing one
        return pa.int64()
    raise InputFileError(where, f"id column {column!r} holds {t}; ids must be integers or strings")


def _check_text_type(t: pa.DataType, where: str, column: str) -> None:
    if not (_is_string(t) or pa.types.is_null(t)):
        raise InputFileError(where, f"column {column!r} holds {t}; expected text (or image paths)")


def _missing(where: str, column: str, names: Sequence[str], what: str) -> DataFormatError:
    return InputFileError(where, f"no {what} column {column!r} (columns: {', '.join(map(str, names)) or 'none'}); "
                           "name the right column")


def _text_stream(f: InputFile) -> io.TextIOWrapper:
    """The file as UTF-8 text, decompressed by its suffix; read lazily (8 KiB at a time)."""
    return io.TextIOWrapper(pa.input_stream(f.path, compression="detect"), encoding="utf-8", newline="")


def _cannot_read(f: InputFile, exc: BaseException) -> DataFormatError:
    text = str(exc).strip().splitlines()
    return InputFileError(f.path, f"cannot be read as {f.format.upper()}: {text[0] if text else type(exc).__name__}")


def _no_rows(f: InputFile) -> DataFormatError:
    return InputFileError(f.path, "the file has no rows; every input file needs rows")


def _json_rows(f: InputFile, stream: io.TextIOWrapper) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL stream."""
    for line_no, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise InputFileError(f.path, f"line {line_no} is not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise InputFileError(f.path, f"line {line_no} holds a JSON {type(obj).__name__}; every line must be "
                                  "an object")
        yield line_no, obj


def _json_type(value: Any) -> pa.DataType:
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return pa.bool_()
    try:
        return pa.array([value]).type
    except (pa.ArrowException, TypeError, ValueError):
        return pa.binary()


def file_schema(f: InputFile, columns: Columns) -> pa.Schema:
    """The file's columns and their types (Parquet: its schema; CSV: the header, all strings; JSONL: the keys of the
    first object, typed by its values), the needed columns checked."""
    try:
        if f.format == "parquet":
            schema = pq.ParquetFile(f.path).schema_arrow
        elif f.format == "csv":
            with _text_stream(f) as stream:
                header = next(csv.reader(stream), None)
            if not header:
                raise _no_rows(f)
            schema = pa.schema([pa.field(n, pa.string()) for n in dict.fromkeys(header)])
        else:
            with _text_stream(f) as stream:
                first = next(_json_rows(f, stream), None)
            if first is None:
                raise _no_rows(f)
            schema = pa.schema([pa.field(str(k), _json_type(v)) for k, v in first[1].items()])
    except (pa.ArrowException, OSError, ValueError, csv.Error) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise _cannot_read(f, exc) from None
    for column, what in ((columns.text, "text"), (columns.id, "id")):
        if column is not None and column not in schema.names:
            raise _missing(f.path, column, schema.names, what)
    return schema


def _csv_batches(f: InputFile, names: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """CSV rows → batches of the ``names`` columns (strings; an empty field is a missing value)."""
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD_CHARS))
    with _text_stream(f) as stream:
        reader = csv.reader(stream)
        header = next(reader, None) or []
        where = [header.index(n) for n in names]
        cols: list[list[str | None]] = [[] for _ in names]
        row = 0
        for values in reader:
            if not values:  # a blank line
                continue
            row += 1
            if len(values) != len(header):
                raise InputFileError(f.path, f"row {row} has {len(values)} fields, the header {len(header)}")
            for col, i in zip(cols, where):
                col.append(values[i] or None)
            if len(cols[0]) >= batch_rows:
                yield pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in cols], names)
                cols = [[] for _ in names]
        if cols[0]:
            yield pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in cols], names)


def _jsonl_batches(f: InputFile, names: list[str], types: list[pa.DataType],
                   batch_rows: int) -> Iterator[pa.RecordBatch]:
    """JSONL objects → batches of the ``names`` columns as ``types`` (string or int64); a missing key is null."""
    cols: list[list[Any]] = [[] for _ in names]
    row = 0
    with _text_stream(f) as stream:
        for line_no, obj in _json_rows(f, stream):
            row += 1
            for col, name, t in zip(cols, names, types):
                value = obj.get(name)
                ok = value is None or (isinstance(value, str) if t == pa.string()
                                       else isinstance(value, int) and not isinstance(value, bool))
                if not ok:
                    raise InputFileError(f.path, f"row {row} (line {line_no}): {name!r} holds "
                                          f"{type(value).__name__} {value!r}; expected "
                                          f"{'text' if t == pa.string() else 'an integer, as in the first row'}")
                col.append(value)
            if len(cols[0]) >= batch_rows:
                yield pa.RecordBatch.from_arrays([pa.array(c, t) for c, t in zip(cols, types)], names)
                cols = [[] for _ in names]
    if cols[0]:
        yield pa.RecordBatch.from_arrays([pa.array(c, t) for c, t in zip(cols, types)], names)


def _raw_batches(f: InputFile, columns: Columns, id_type: pa.DataType | None,
                 batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's needed columns (text, then id) as record batches of at most ``batch_rows`` rows. CSV and JSONL
    are parsed by the standard library, lazily (pyarrow's streaming readers read ahead without bound)."""
    names = [columns.text] + ([columns.id] if columns.id else [])
    try:
        if f.format == "parquet":
            yield from pq.ParquetFile(f.path).iter_batches(batch_size=batch_rows, columns=names)
        elif f.format == "csv":
            yield from _csv_batches(f, names, batch_rows)
        else:
            yield from _jsonl_batches(f, names, [pa.string()] + ([id_type or pa.string()] if columns.id else []),
                                      batch_rows)
    except (pa.ArrowException, OSError, ValueError, csv.Error) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise _cannot_read(f, exc) from None


def _as_type(array: Any, t: pa.DataType) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array if array.type == t else array.cast(t)


def _first_null(array: pa.Array) -> int | None:
    if array.null_count == 0:
        return None
    return int(pc.index(pc.is_null(array), True).as_py())


def _checked(batch: pa.RecordBatch, f: InputFile, columns: Columns, id_type: pa.DataType | None,
             start: int) -> tuple[pa.Array, pa.Array | None]:
    """(texts as string, ids as id_type or None) of a batch; typed errors for missing values."""
    texts = _as_type(batch.column(0), pa.string())
    if not columns.allow_null and (i := _first_null(texts)) is not None:
        raise InputFileError(f.path, f"row {start + i + 1} has no {columns.text!r} value (null, a missing key or "
                              "an empty CSV field); fill it in or drop the row")
    ids = None
    if columns.id:
        ids = _as_type(batch.column(1), id_type or pa.string())
        if (i := _first_null(ids)) is not None:
            raise InputFileError(f.path, f"row {start + i + 1} has no {columns.id!r} value; every row needs an id")
    return texts, ids


def inspect_file(f: InputFile, columns: Columns) -> FileInfo:
    """Validate one file end to end without keeping it (columns, types, rows, missing values) → FileInfo."""
    schema = file_schema(f, columns)
    _check_text_type(schema.field(columns.text).type, f.path, columns.text)
    id_type = _normal_id_type(schema.field(columns.id).type, f.path, columns.id) if columns.id else pa.int64()
    if f.format == "csv":
        id_type = pa.string()
    rows = 0
    for batch in _raw_batches(f, columns, id_type, 65536):
        _checked(batch, f, columns, id_type, rows)
        rows += batch.num_rows
    if rows == 0:
        raise InputFileError(f.path, "the file has a header but no rows; every input file needs rows")
    return FileInfo(rows, id_type)


def common_id_type(files: Sequence[InputFile], infos: Sequence[FileInfo], columns: Columns) -> pa.DataType:
    """The one id type of the job (int64 for positions); typed error when files disagree."""
    if not columns.id:
        return pa.int64()
    types = {str(i.id_type) for i in infos}
    if len(types) > 1:
        by = {str(i.id_type): f.path for f, i in zip(files, infos)}
        raise DataFormatError(f"the id column {columns.id!r} holds different types across files: "
                              + ", ".join(f"{t} in {p}" for t, p in sorted(by.items()))
                              + "; give every file the same id type (CSV ids are read as strings)")
    return infos[0].id_type


def read_blocks(f: InputFile, columns: Columns, *, first_id: int = 0, id_type: pa.DataType | None = None,
                block_rows: int = 1024) -> Iterator[pa.Table]:
    """Stream one file as tables of at most ``block_rows`` rows with columns ``id`` (the id column as
    ``id_type``, else int64 positions from ``first_id``), ``input`` (string) and ``_file`` (int32 = f.index)."""
    if block_rows < 1:
        raise InvalidInputError(f"block_rows must be >= 1, got {block_rows}")
    if not columns.id:
        id_type = None
    elif f.format == "csv":
        id_type = pa.string()
    elif id_type is None:
        id_type = _normal_id_type(file_schema(f, columns).field(columns.id).type, f.path, columns.id)
    pending: list[pa.Table] = []
    held = start = 0
    for batch in _raw_batches(f, columns, id_type, block_rows):
        texts, ids = _checked(batch, f, columns, id_type, start + held)
        if ids is None:
            ids = pa.array(range(first_id + start + held, first_id + start + held + len(texts)), pa.int64())
        pending.append(pa.table({ID: ids, INPUT: texts, FILE: pa.array([f.index] * len(texts), pa.int32())}))
        held += len(texts)
        while held >= block_rows:
            table = pa.concat_tables(pending)
            yield table.slice(0, block_rows).combine_chunks()
            rest = table.slice(block_rows)
            pending, held, start = ([rest] if rest.num_rows else []), rest.num_rows, start + block_rows
    if held:
        yield pa.concat_tables(pending).combine_chunks()


# ------------------------------------------------------------------------------------------------ writing


class StagedOutput:
    """An output folder written into a hidden staging folder beside it and renamed into place by ``commit``.

    OUT_DIR must not exist or be empty, unless ``overwrite`` (the old one is replaced at commit, not before)."""

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False):
        self.target = self.check(out_dir, overwrite)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.target.parent / f".{self.target.name}.incomplete-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        self.committed = False

    @staticmethod
    def check(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """The absolute OUT_DIR; typed error when it is a file, or a non-empty folder without ``overwrite``."""
        target = Path(out_dir).absolute()
        if target.exists() and not target.is_dir():
            raise InvalidInputError(f"output {target} exists and is not a folder")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise InvalidInputError(f"output folder {target} exists and is not empty; choose a new folder or "
                                    "pass --overwrite (overwrite=True) to replace it when the job succeeds")
        return target

    def commit(self, summary: dict) -> Path:
        """Write ``_SUCCESS`` (``summary`` as JSON) and move the staged folder to OUT_DIR."""
        (self.path / SUCCESS).write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
        old = None
        if self.target.exists():
            if any(self.target.iterdir()):
                old = self.target.parent / f".{self.target.name}.replaced-{uuid.uuid4().hex[:8]}"
                os.rename(self.target, old)
            else:
                self.target.rmdir()
        os.rename(self.path, self.target)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def abort(self) -> None:
        """Remove the staging folder (whatever was written into it)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.abort()


class ParquetParts:
    """Write tables of one schema as ``part-00000.parquet``, ``part-00001.parquet``… in ``folder``: row groups
    of ``row_group_rows`` rows, a new file every ``rows_per_file`` rows. Memory: one row group."""

    def __init__(self, folder: str | os.PathLike, schema: pa.Schema, rows_per_file: int = 1_000_000,
                 row_group_rows: int = 65536):
        self.folder, self.schema = Path(folder), schema
        self.rows_per_file, self.row_group_rows = max(1, rows_per_file), max(1, row_group_rows)
        self.files: list[str] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0
        self._pending: list[pa.Table] = []
        self._held = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._held += table.num_rows
        if self._held >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._held = [], 0
        while table.num_rows:
            if self._writer is None:
                name = f"part-{len(self.files):05d}.parquet"
                self._writer = pq.ParquetWriter(self.folder / name, self.schema)
                self.files.append(name)
                self._in_file = 0
            take = min(table.num_rows, self.rows_per_file - self._in_file)
            self._writer.write_table(table.slice(0, take), row_group_size=self.row_group_rows)
            self._in_file += take
            self.rows += take
            table = table.slice(take)
            if self._in_file >= self.rows_per_file:
                self._writer.close()
                self._writer = None

    def close(self) -> list[str]:
        """Flush and close; returns the file names written."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.files


def parquet_files(folder: str | os.PathLike) -> list[Path]:
    """The data files of an output folder (names starting with ``_`` or ``.`` skipped), sorted."""
    return sorted(p for p in Path(folder).rglob("*.parquet")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))


def output_counts(folder: str | os.PathLike, null_column: str | None = None) -> tuple[int, int, list[str]]:
    """(rows, nulls in ``null_column``, file names) of the Parquet files in ``folder``, from their footers."""
    rows = nulls = 0
    names = []
    for path in parquet_files(folder):
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        names.append(str(path.relative_to(folder)))
        if null_column is None:
            continue
        index = meta.schema.names.index(null_column) if null_column in meta.schema.names else None
        if index is None:
            continue
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index).statistics
            if stats is not None and stats.has_null_count:
                nulls += stats.null_count
            else:
                nulls += pq.read_table(path, columns=[null_column]).column(0).null_count
                break
    return rows, nulls, names


def read_success(folder: str | os.PathLike, kind: str) -> dict:
    """The ``_SUCCESS`` summary of a complete output folder of ``kind`` ('classify' | 'embed'); typed error for a
    folder that is missing, incomplete or of another kind."""
    path = Path(folder) / SUCCESS
    if not Path(folder).is_dir():
        raise DataFormatError(f"{folder}: no such folder")
    if not path.is_file():
        raise DataFormatError(f"{folder} has no {SUCCESS}: it is not a complete fewshot {kind} output (the job did "
                              "not finish); run it again")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"cannot read {path}: {exc}") from None
    if not isinstance(summary, dict) or summary.get("kind") != kind:
        raise DataFormatError(f"{folder} is not a fewshot {kind} output ({SUCCESS} says kind "
                              f"{summary.get('kind') if isinstance(summary, dict) else None!r})")
    return summary
