"""What a corpus job does in either mode: plan the inputs (expand, validate, number), run the blocks through a
task in one streaming process, and publish the output folder with its ``_SUCCESS`` summary."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from fewshot._core import __version__
from fewshot.batch.io import (
    Columns,
    FileInfo,
    InputFile,
    ParquetParts,
    StagedOutput,
    common_id_type,
    expand_inputs,
    inspect_file,
    output_counts,
    read_blocks,
)
from fewshot.errors import FewShotError, InvalidInputError

#: the id column looked for when none is named (``id_column=None``); ``POSITIONS`` ('') numbers rows instead
AUTO_ID = "id"
POSITIONS = ""
DEFAULT_BATCH_SIZE = 256


@dataclass
class BatchResult:
    """What a finished job wrote: ``output`` (the published folder), ``rows``, ``rejected`` (classify: rows with
    label null; None for embed), the Parquet ``files`` in it, wall ``seconds``, ``mode`` ('streaming' | 'ray'),
    ``workers`` and the Ray ``log`` file (None when streaming)."""

    output: Path
    rows: int
    files: list[str]
    seconds: float
    mode: str
    workers: int = 1
    rejected: int | None = None
    log: Path | None = None
    summary: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Plan:
    """The job's input: files, the columns read, each file's row count and first position, the id type."""

    files: list[InputFile]
    columns: Columns
    infos: list[FileInfo]
    offsets: list[int]
    id_type: pa.DataType

    @property
    def rows(self) -> int:
        return sum(i.rows for i in self.infos)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def resolve_columns(files: Sequence[InputFile], text_column: str, id_column: str | None,
                    allow_null: bool = False) -> Columns:
    """``id_column=None``: the column ``id`` when the first file has one, else row positions; ``''``: positions."""
    if not isinstance(text_column, str) or not text_column:
        raise InvalidInputError(f"text_column must be a column name, got {text_column!r}")
    if id_column is None:
        from fewshot.batch.io import file_schema

        names = file_schema(files[0], Columns(text_column, None)).names
        id_column = AUTO_ID if AUTO_ID in names and AUTO_ID != text_column else POSITIONS
    return Columns(text_column, id_column or None, allow_null)


def plan_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike, text_column: str = "text",
                id_column: str | None = None, allow_null: bool = False,
                inspect: Callable[[list[InputFile], Columns], list[FileInfo]] | None = None) -> Plan:
    """Expand and validate every input file before any work (``inspect`` runs the checks, by default here;
    the Ray mode passes one that runs them as Ray tasks)."""
    files = expand_inputs(inputs)  # type: ignore[arg-type]
    columns = resolve_columns(files, text_column, id_column, allow_null)
    infos = inspect(files, columns) if inspect is not None else [inspect_file(f, columns) for f in files]
    offsets, total = [], 0
    for info in infos:
        offsets.append(total)
        total += info.rows
    return Plan(files, columns, infos, offsets, common_id_type(files, infos, columns))


def load_engine(engine: Any, encoder: Any = None):
    """A FewShotEngine, or the directory of a saved one (``encoder`` overrides its encoder)."""
    from fewshot.engine import FewShotEngine

    if isinstance(engine, FewShotEngine):
        if encoder is not None:
            raise InvalidInputError("encoder= applies to an engine loaded from a directory, not to a live engine")
        return engine
    if not isinstance(engine, (str, os.PathLike)):
        raise InvalidInputError(f"engine must be a FewShotEngine or the directory of a saved one, got "
                                f"{type(engine).__name__}")
    return FewShotEngine.load(engine, encoder=encoder)


def absolute_encoder_name(name: str) -> str:
    """An encoder name whose local folder is relative (``onnx:dir``, ``st:dir``) made absolute for the workers."""
    from fewshot.encoders.registry import LOCAL_DIR_PREFIXES, split_name

    prefix, rest = split_name(name)
    if prefix in LOCAL_DIR_PREFIXES and rest and not os.path.isabs(rest) and os.path.exists(rest):
        return f"{prefix}:{os.path.abspath(rest)}"
    return name


def run_streaming(plan: Plan, task: Callable[[pa.Table], pa.Table], schema: pa.Schema, staged: StagedOutput,
                  batch_size: int, rows_per_file: int, progress: bool | None, desc: str) -> None:
    """Read every file block by block, run ``task`` on each block and write the results in order. Memory: one
    block of input, one row group of output, the task's model."""
    from fewshot._progress import progress as policy_bar

    parts = ParquetParts(staged.path, schema, rows_per_file=rows_per_file,
                         row_group_rows=max(batch_size, min(65536, rows_per_file)))
    with policy_bar(total=plan.rows, unit="rows", unit_scale=True, desc=desc, show=progress) as bar:
        for f, first in zip(plan.files, plan.offsets):
            for block in read_blocks(f, plan.columns, first_id=first, id_type=plan.id_type, block_rows=batch_size):
                out = task(block)
                parts.write(out)
                bar.update(block.num_rows)
    parts.close()


def publish(staged: StagedOutput, plan: Plan, kind: str, started: float, mode: str, workers: int,
            extra: dict, log: Path | None = None) -> BatchResult:
    """Count what was written, check every input row is there exactly once by count, write ``_SUCCESS`` and
    move the folder into place."""
    rows, nulls, names = output_counts(staged.path, "label" if kind == "classify" else None)
    if rows != plan.rows:
        raise FewShotError(f"the job wrote {rows} rows for {plan.rows} input rows; the output was not published "
                           f"(nothing at {staged.target}); run it again" + (f" and see {log}" if log else ""))
    seconds = time.perf_counter() - started
    summary = {"format": "fewshot-batch", "kind": kind, "fewshot_version": __version__, "rows": rows,
               "files": names, "inputs": plan.paths, "text_column": plan.columns.text,
               "id_column": plan.columns.id, "mode": mode, "workers": workers, "seconds": round(seconds, 3),
               **extra}
    if kind == "classify":
        summary["rejected"] = nulls
    output = staged.commit(summary)
    return BatchResult(output=output, rows=rows, files=names, seconds=seconds, mode=mode, workers=workers,
                       rejected=nulls if kind == "classify" else None, log=log, summary=summary)
