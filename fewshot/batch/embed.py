"""``embed_files``: embed a corpus with an encoder into a Parquet folder (id, embedding), in one streaming process
or on Ray. ``fewshot.batch.from_embeddings`` builds an engine from the result."""
from __future__ import annotations

import os
import time
from collections.abc import Sequence

from fewshot.batch.io import StagedOutput
from fewshot.batch.jobs import (
    DEFAULT_BATCH_SIZE,
    BatchResult,
    absolute_encoder_name,
    check_batch_size,
    plan_inputs,
    publish,
    run_streaming,
)
from fewshot.batch.tasks import EmbedTask, resolve_kind
from fewshot.encoders.base import Encoder
from fewshot.errors import InvalidInputError


def rows_per_file_for(dim: int) -> int:
    """About 256 MiB of float32 embeddings per output file."""
    return max(1024, (256 << 20) // (4 * max(1, dim)))


def embed_files(encoder: str | Encoder, inputs: Sequence[str | os.PathLike] | str | os.PathLike,
                output: str | os.PathLike, *, text_column: str = "text", id_column: str | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, ray: bool | str | None = None, workers: int | None = None,
                kind: str = "auto", overwrite: bool = False, progress: bool | None = None,
                log_file: str | os.PathLike | None = None, rows_per_file: int | None = None,
                threads: int = 1) -> BatchResult:
    """Embed every row of ``inputs`` into Parquet files in ``output``: columns id (as in ``classify_files``) and
    embedding (fixed-size list of dim float32, L2-normalised, equal to ``encoder.encode``). ``encoder``: a
    registry name (``minilm``, ``onnx:DIR`` …; on Ray every worker loads it) or, streaming only, an Encoder.
    The other arguments are those of ``classify_files``; ``_SUCCESS`` records the encoder name and dim."""
    check_batch_size(batch_size)
    name = absolute_encoder_name(encoder) if isinstance(encoder, str) else getattr(encoder, "name", "")
    if ray not in (None, False):
        from fewshot.batch import ray_pipeline

        if not isinstance(encoder, str):
            raise InvalidInputError("on Ray, encoder must be a registry name (every worker loads it)")
        return ray_pipeline.run_job(
            "embed", name, inputs, output, text_column=text_column, id_column=id_column, batch_size=batch_size,
            workers=workers, address=ray if isinstance(ray, str) else None, log_file=log_file, overwrite=overwrite,
            rows_per_file=rows_per_file or 65_536, options={"kind": kind, "threads": threads},
            extra={"encoder": name})
    started = time.perf_counter()
    StagedOutput.check(output, overwrite)
    plan = plan_inputs(inputs, text_column, id_column)
    if isinstance(encoder, str):
        from fewshot.encoders.registry import load_encoder

        model = load_encoder(name)
    else:
        model = encoder
    resolve_kind(model, kind)
    task = EmbedTask(model, files=plan.paths, kind=kind, id_type=plan.id_type)
    with StagedOutput(output, overwrite) as staged:
        run_streaming(plan, task, task.schema(plan.id_type), staged, batch_size,
                      rows_per_file or rows_per_file_for(model.dim), progress, desc="embedding")
        return publish(staged, plan, "embed", started, "streaming", 1, {"encoder": name, "dim": int(model.dim)})
