"""The corpus jobs on Ray Data: read the files → ``map_batches`` with a class that loads the saved engine (or the
encoder) once per worker → ``write_parquet``. The same blocks and the same per-block work as the streaming
process (``fewshot.batch.io.read_blocks``, ``fewshot.batch.tasks``), so the rows are the same.

    ds = classify_dataset(["corpus/*.parquet"], "engine/", top_k=3)   # a lazy ray.data.Dataset
    ds.filter(lambda r: r["score"] > 0.9).write_parquet("confident/")

Sizing, so the pipeline cannot stall: with ``N`` workers on a cluster of ``C`` CPUs each worker (a Ray actor)
asks for ``min(1, (C - R) / N)`` CPUs and the read and write tasks for ``IO_CPUS`` each, where
``R = max(2 * IO_CPUS, C / 16)`` is held back for them. (Two actors asking for 1 CPU each on a 2-CPU machine
leave the read and write tasks none, and Ray Data waits for ever.) A worker runs its model on ``threads``
intra-op threads (1 by default, for ONNX, torch, faiss and BLAS), so N workers use about N cores.

Faults: Ray Data restarts a worker that dies and retries its batch; the output is published only when the rows
written equal the rows read (``jobs.publish``), each input row once.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from fewshot.batch.io import FILE, ID, INPUT, Columns, FileInfo, InputFile, StagedOutput, inspect_file, read_blocks
from fewshot.batch.jobs import (
    DEFAULT_BATCH_SIZE,
    BatchResult,
    Plan,
    absolute_encoder_name,
    check_batch_size,
    plan_inputs,
    publish,
)
from fewshot.batch.tasks import ClassifyTask, EmbedTask
from fewshot.errors import FewShotError, InvalidInputError

try:
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy, Datasource, ReadTask
    from ray.data.block import BlockMetadata
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise FewShotError("the Ray mode needs Ray Data: pip install 'fewshot[ray]'") from _exc

#: CPUs each read or write task asks for
IO_CPUS = 0.25
#: seconds Ray Data may wait for the workers to start before the job fails (it would wait for ever)
WAIT_FOR_WORKERS_S = 600
#: the most input blocks per cluster CPU (see ``read_blocks_wanted``): small blocks even out the workers' ends
BLOCKS_PER_CPU = 64
#: blocks queued on a worker: one running, one ready (more would leave some idle while others finish queues)
TASKS_IN_FLIGHT = 2
INPUT_SCHEMA_FIELDS = (INPUT, pa.string()), (FILE, pa.int32())


def plan_workers(cluster_cpus: float, workers: int | None = None) -> tuple[int, float]:
    """(number of workers, CPUs each asks for) on a cluster of ``cluster_cpus`` CPUs; see the module docstring.
    ``workers`` None: one per CPU."""
    reserve = max(2 * IO_CPUS, cluster_cpus / 16)
    free = cluster_cpus - reserve
    if free <= 0:
        raise InvalidInputError(f"the Ray cluster has {cluster_cpus:g} CPUs: too few to run a worker beside the "
                                f"read and write tasks ({reserve:g} CPUs)")
    n = workers if workers is not None else max(1, int(cluster_cpus))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"workers must be a positive integer, got {workers!r}")
    return n, math.floor(min(1.0, free / n) * 1000) / 1000


def cluster_cpus() -> float:
    """CPUs of the connected Ray cluster (connecting to a local one when none is)."""
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return float(ray.cluster_resources().get("CPU", 0))


def limit_threads(threads: int) -> None:
    """Run this process's models on ``threads`` threads: ONNX (read at load), torch, faiss and BLAS."""
    os.environ["FEWSHOT_ONNX_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    with contextlib.suppress(ImportError, AttributeError):
        import faiss
        faiss.omp_set_num_threads(threads)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)


# --------------------------------------------------------------------------------------------- the workers


class EnginePredictor:
    """``map_batches`` class: loads the saved engine once per worker, then classifies pyarrow batches →
    (id, label, score[, top_k]). Subclass it to post-process; pass the subclass as ``predictor=``."""

    def __init__(self, engine_dir: str, *, encoder: Any = None, files: Sequence[str] = (), top_k: int | None = None,
                 reject: bool = False, kind: str = "auto", id_type: pa.DataType | None = None,
                 input_column: str = INPUT, id_column: str = ID, threads: int = 1):
        from fewshot.engine import FewShotEngine

        limit_threads(threads)
        engine = FewShotEngine.load(engine_dir, encoder=encoder)
        limit_threads(threads)  # torch may have been imported by the load
        self.task = ClassifyTask(engine, files=files, top_k=top_k, reject=reject, kind=kind, id_type=id_type,
                                 input_column=input_column, id_column=id_column)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.task(batch)


class EncoderEmbedder:
    """``map_batches`` class: loads an encoder once per worker, then embeds pyarrow batches → (id, embedding)."""

    def __init__(self, encoder: Any, *, files: Sequence[str] = (), kind: str = "auto",
                 id_type: pa.DataType | None = None, input_column: str = INPUT, id_column: str = ID,
                 threads: int = 1):
        from fewshot.encoders.registry import load_encoder

        limit_threads(threads)
        model = load_encoder(encoder) if isinstance(encoder, str) else encoder
        limit_threads(threads)
        self.task = EmbedTask(model, files=files, kind=kind, id_type=id_type, input_column=input_column,
                              id_column=id_column)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.task(batch)


# --------------------------------------------------------------------------------------------- reading


def _read_file(f: InputFile, columns: Columns, first_id: int, id_type: pa.DataType,
               block_rows: int) -> Iterator[pa.Table]:
    yield from read_blocks(f, columns, first_id=first_id, id_type=id_type, block_rows=block_rows)


class InputDatasource(Datasource):
    """A planned job's files as a Ray Data source: one read task per file, blocks of ``block_rows`` rows with
    columns id, input, _file (``read_blocks``); rows are numbered by their position in the whole input."""

    def __init__(self, plan: Plan, block_rows: int = DEFAULT_BATCH_SIZE):
        self.plan, self.block_rows = plan, check_batch_size(block_rows)

    def get_name(self) -> str:
        return "FewshotInputs"

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(os.path.getsize(f.path) for f in self.plan.files)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        schema = pa.schema([(ID, self.plan.id_type), *INPUT_SCHEMA_FIELDS])
        tasks = []
        for f, info, first in zip(self.plan.files, self.plan.infos, self.plan.offsets):
            meta = BlockMetadata(num_rows=info.rows, size_bytes=os.path.getsize(f.path), input_files=(f.path,),
                                 exec_stats=None)
            read = functools.partial(_read_file, f, self.plan.columns, first, self.plan.id_type, self.block_rows)
            tasks.append(ReadTask(read, meta, schema=schema))
        return tasks


def inspect_on_ray(files: list[InputFile], columns: Columns) -> list[FileInfo]:
    """``io.inspect_file`` for every file, as parallel Ray tasks of ``IO_CPUS`` CPUs."""
    remote = ray.remote(num_cpus=IO_CPUS, max_retries=1)(inspect_file)
    try:
        return ray.get([remote.remote(f, columns) for f in files])
    except Exception as exc:
        raise_fewshot_cause(exc)
        raise


def read_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike | None = None, *,
                text_column: str = "text", id_column: str | None = None, block_rows: int = DEFAULT_BATCH_SIZE,
                plan: Plan | None = None) -> ray.data.Dataset:
    """The input files (paths, globs, folders; checked first, as Ray tasks) as a lazy Dataset of blocks with
    columns id, input, _file."""
    if plan is None:
        if inputs is None:
            raise InvalidInputError("read_inputs needs inputs (paths, globs or folders) or a plan")
        cluster_cpus()
        plan = plan_inputs(inputs, text_column, id_column, inspect=inspect_on_ray)
    return ray.data.read_datasource(InputDatasource(plan, block_rows), num_cpus=IO_CPUS,
                                    override_num_blocks=read_blocks_wanted(plan, block_rows, cluster_cpus()))


def read_blocks_wanted(plan: Plan, block_rows: int, cpus: float) -> int:
    """How many blocks the read should give: one per ``block_rows`` rows, at most ``BLOCKS_PER_CPU`` per cluster
    CPU, at least one per file. Ray Data merges what a read task yields into large blocks and splits them back
    into this many; with one block per file a single big file would feed a single worker."""
    wanted = min(math.ceil(plan.rows / block_rows), BLOCKS_PER_CPU * max(1, math.ceil(cpus)))
    return max(len(plan.files), wanted)


def _source(data: Any, text_column: str, id_column: str | None, batch_size: int) -> tuple[Any, Plan | None, dict]:
    """(dataset, plan or None, the predictor's column arguments) for files or a user's Dataset."""
    if isinstance(data, ray.data.Dataset):
        if not id_column:
            raise InvalidInputError("a Dataset passed in needs id_column= (the column that identifies its rows)")
        return data, None, {"input_column": text_column, "id_column": id_column}
    cluster_cpus()
    plan = plan_inputs(data, text_column, id_column, inspect=inspect_on_ray)
    return read_inputs(plan=plan, block_rows=batch_size), plan, {"files": plan.paths, "id_type": plan.id_type}


def _mapped(ds: Any, cls: type, args: tuple, kwargs: dict, batch_size: int, workers: int | None) -> Any:
    n, cpus = plan_workers(cluster_cpus(), workers)
    return ds.map_batches(cls, fn_constructor_args=args, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                          batch_format="pyarrow", num_cpus=cpus,
                          compute=ActorPoolStrategy(size=n, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT))


def classify_dataset(data: Any, engine_dir: str | os.PathLike, *, text_column: str = "text",
                     id_column: str | None = None, top_k: int | None = None, reject: bool = False,
                     batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, kind: str = "auto",
                     encoder: Any = None, threads: int = 1, predictor: type = EnginePredictor) -> ray.data.Dataset:
    """A lazy Dataset of predictions (id, label, score[, top_k]) for ``data``: input files (paths, globs,
    folders) or your own ``ray.data.Dataset`` (then ``text_column`` and ``id_column`` name its columns).
    Compose it further, or ``.write_parquet(...)`` / ``.iter_batches()`` it; rows come in no fixed order."""
    check_batch_size(batch_size)
    ds, _, columns = _source(data, text_column, id_column, batch_size)
    kwargs = dict(encoder=encoder, top_k=top_k, reject=reject, kind=kind, threads=threads, **columns)
    return _mapped(ds, predictor, (os.path.abspath(engine_dir),), kwargs, batch_size, workers)


def embed_dataset(data: Any, encoder: str, *, text_column: str = "text", id_column: str | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, kind: str = "auto",
                  threads: int = 1, embedder: type = EncoderEmbedder) -> ray.data.Dataset:
    """A lazy Dataset of embeddings (id, embedding: fixed-size list of dim float32) for ``data`` (as
    ``classify_dataset``)."""
    check_batch_size(batch_size)
    ds, _, columns = _source(data, text_column, id_column, batch_size)
    name = absolute_encoder_name(encoder) if isinstance(encoder, str) else encoder
    return _mapped(ds, embedder, (name,), dict(kind=kind, threads=threads, **columns), batch_size, workers)


# --------------------------------------------------------------------------------------------- the job


def fewshot_cause(exc: BaseException) -> FewShotError | None:
    """The FewShotError behind a Ray error (a task's or a worker's), or None."""
    from ray.exceptions import RayTaskError

    queue: list[BaseException] = [exc]
    seen: set[int] = set()
    while queue:
        e = queue.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(e, RayTaskError) and isinstance(cause, BaseException):
            queue.insert(0, cause)
            continue
        if isinstance(e, FewShotError):
            return e
        queue.extend(x for x in (cause, e.__cause__, e.__context__) if isinstance(x, BaseException))
    return None


def raise_fewshot_cause(exc: BaseException) -> None:
    cause = fewshot_cause(exc)
    if cause is not None:
        raise cause from None


@contextlib.contextmanager
def output_to(log_file: Path | None) -> Iterator[None]:
    """Send everything written to this process's stdout and stderr (file descriptors 1 and 2: Ray's C++ core,
    its log monitor, Python warnings and tracebacks) to ``log_file`` for the block; None: leave them."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for x in (fd, *saved):
            os.close(x)


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[str]:
    """Use the Ray this process is connected to; else join ``address`` (or $RAY_ADDRESS); else start a local Ray
    (shut down after the block). Yields a description of where the job runs."""
    if ray.is_initialized():
        yield "the connected Ray cluster"
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"log_to_driver": True, "logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False
    ray.init(address=address, **options)
    try:
        yield f"Ray at {address}" if address else "a local Ray"
    finally:
        ray.shutdown()


@contextlib.contextmanager
def data_context(quiet: bool) -> Iterator[None]:
    """Ray Data settings for a job: bounded wait for workers, workers' errors raised as they are; when ``quiet``,
    no progress bars or plan banners."""
    ctx = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats", "wait_for_min_actors_s",
             "raise_original_map_exception")
    saved = {n: getattr(ctx, n) for n in names if hasattr(ctx, n)}
    if hasattr(ctx, "raise_original_map_exception"):
        ctx.raise_original_map_exception = True  # a worker's FewShotError reaches the driver as itself
    if hasattr(ctx, "wait_for_min_actors_s") and ctx.wait_for_min_actors_s < 0:
        ctx.wait_for_min_actors_s = WAIT_FOR_WORKERS_S
    if quiet:
        for n in names[:3]:
            if hasattr(ctx, n):
                setattr(ctx, n, False)
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(ctx, n, v)


def check_engine_dir(engine_dir: str | os.PathLike) -> None:
    """Fail in the driver, with a typed error, when ``engine_dir`` is not a readable saved engine."""
    from fewshot.engine import persistence
    from fewshot.index import storage

    storage.read_snapshot(engine_dir, persistence.SNAPSHOT_KIND, persistence.read_manifest)


def run_job(kind: str, target: Any, inputs: Any, output: str | os.PathLike, *, text_column: str = "text",
            id_column: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
            address: str | None = None, log_file: str | os.PathLike | None = None, overwrite: bool = False,
            rows_per_file: int = 1_000_000, options: dict | None = None, worker_class: type | None = None,
            extra: dict | None = None) -> BatchResult:
    """Run a 'classify' (``target`` = engine directory) or 'embed' (``target`` = encoder name) job on Ray and
    publish OUT_DIR. With ``log_file`` every byte Ray prints goes there instead of the console."""
    started = time.perf_counter()
    check_batch_size(batch_size)
    options = dict(options or {})
    log = Path(log_file).absolute() if log_file is not None else None
    StagedOutput.check(output, overwrite)
    if kind == "classify":
        check_engine_dir(target)
    with output_to(log), ray_session(address), data_context(quiet=log is not None):
        try:
            cluster_cpus()
            plan = plan_inputs(inputs, text_column, id_column, inspect=inspect_on_ray)
            ds = read_inputs(plan=plan, block_rows=batch_size)
            columns = {"files": plan.paths, "id_type": plan.id_type}
            n, _ = plan_workers(cluster_cpus(), workers)
            if kind == "classify":
                cls = worker_class or EnginePredictor
                args: tuple = (os.path.abspath(target),)
            else:
                cls = worker_class or EncoderEmbedder
                args = (absolute_encoder_name(target) if isinstance(target, str) else target,)
            ds = _mapped(ds, cls, args, {**options, **columns}, batch_size, n)
            with StagedOutput(output, overwrite) as staged:
                ds.write_parquet(str(staged.path), min_rows_per_file=rows_per_file,
                                 ray_remote_args={"num_cpus": IO_CPUS})
                job_extra = dict(extra or {})
                if kind == "embed":
                    job_extra.update(_embedding_info(staged.path))
                return publish(staged, plan, kind, started, "ray", n, job_extra, log)
        except Exception as exc:
            if log is not None:
                traceback.print_exc()  # into the log
            cause = fewshot_cause(exc)
            if cause is not None:
                raise cause from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FewShotError(f"the Ray job failed: {type(exc).__name__}: {first}"
                               + (f" (details in {log})" if log else "")) from exc


def _embedding_info(folder: Path) -> dict:
    import pyarrow.parquet as pq

    from fewshot.batch.io import parquet_files

    files = parquet_files(folder)
    if not files:
        return {}
    return {"dim": int(pq.read_schema(files[0]).field("embedding").type.list_size)}
