"""``classify_files``: classify a corpus with a saved engine into a Parquet folder, in one streaming process or on
Ray; either way the rows equal ``FewShotEngine.predict`` on the same inputs."""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from fewshot.batch.io import StagedOutput
from fewshot.batch.jobs import (
    DEFAULT_BATCH_SIZE,
    BatchResult,
    check_batch_size,
    load_engine,
    plan_inputs,
    publish,
    run_streaming,
)
from fewshot.batch.tasks import ClassifyTask, resolve_kind
from fewshot.engine.predictions import check_top_k
from fewshot.errors import InvalidInputError

#: rows per output file when streaming (Ray: at least this many per file, fewer for the last ones)
ROWS_PER_FILE = 1_000_000


def classify_files(engine: Any, inputs: Sequence[str | os.PathLike] | str | os.PathLike, output: str | os.PathLike,
                   *, text_column: str = "text", id_column: str | None = None, top_k: int | None = None,
                   reject: bool = False, batch_size: int = DEFAULT_BATCH_SIZE, ray: bool | str | None = None,
                   workers: int | None = None, kind: str = "auto", encoder: Any = None, overwrite: bool = False,
                   progress: bool | None = None, log_file: str | os.PathLike | None = None,
                   rows_per_file: int = ROWS_PER_FILE, threads: int = 1, predictor: type | None = None) -> BatchResult:
    """Classify every row of ``inputs`` (CSV / JSONL / Parquet paths, globs or folders) into Parquet files in
    ``output``: columns id (``id_column``; None: the column ``id`` if the files have one, else the row's
    position in the input; '': always positions), label (None when rejected), score, and top_k
    (list of {label, score}) when ``top_k`` is given.

    ``engine``: the directory of a saved engine (or, streaming only, a FewShotEngine); ``encoder`` overrides its
    encoder. ``kind``: 'auto' (images when the encoder embeds no text), 'text' or 'image' (the column holds
    image paths, relative ones read from the folder of the file that lists them).

    ``ray``: None / False streams in this process (bounded memory, progress bar after 2 s unless
    ``progress=False``); True runs on the connected Ray, else on $RAY_ADDRESS, else on a local Ray; a string
    joins that address. ``workers``: Ray workers (default one per cluster CPU), each on ``threads`` threads.
    ``log_file``: where Ray's own output goes (None: the console). ``predictor``: a subclass of
    ``ray_pipeline.EnginePredictor`` to run instead. Validates every file before any work; publishes ``output``
    only when complete (``fewshot.batch.io``)."""
    if top_k is not None:
        check_top_k(top_k)
    check_batch_size(batch_size)
    options: dict[str, Any] = {"top_k": top_k, "reject": bool(reject), "kind": kind}
    extra = {"top_k": top_k, "reject": bool(reject)}
    if ray not in (None, False):
        from fewshot.batch import ray_pipeline

        if not isinstance(engine, (str, os.PathLike)):
            raise InvalidInputError("on Ray, engine must be the directory of a saved engine (every worker loads it)")
        return ray_pipeline.run_job(
            "classify", engine, inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
            workers=workers, address=ray if isinstance(ray, str) else None, log_file=log_file, overwrite=overwrite,
            rows_per_file=rows_per_file, options={**options, "encoder": encoder, "threads": threads},
            worker_class=predictor, extra={**extra, "engine": os.path.abspath(engine)})
    started = time.perf_counter()
    StagedOutput.check(output, overwrite)
    plan = plan_inputs(inputs, text_column, id_column)
    model = load_engine(engine, encoder)
    resolve_kind(model.encoder, kind)
    task = ClassifyTask(model, files=plan.paths, id_type=plan.id_type, **options)
    with StagedOutput(output, overwrite) as staged:
        run_streaming(plan, task, task.schema(plan.id_type), staged, batch_size, rows_per_file, progress,
                      desc="classifying")
        where = os.path.abspath(engine) if isinstance(engine, (str, os.PathLike)) else None
        return publish(staged, plan, "classify", started, "streaming", 1, {**extra, "engine": where})
