"""Background refine jobs: ``POST .../refine`` answers 202 with a job id; one worker thread runs the jobs in order
(``engine.refine`` trains outside the engine's lock, so classify keeps answering on the old state), then compacts
the engine so the refined state is durable before the job reads ``done``. A job killed with the server is lost:
the engine restarts from its last durable state."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fewshot.classifiers import CLASSIFIERS
from fewshot.engine import lifecycle
from fewshot.errors import InvalidInputError, NotFittedError, UnknownJobError
from fewshot.serve.store import EngineStore, Handle

log = logging.getLogger("fewshot.serve")

MAX_KEPT_JOBS = 1000


@dataclass
class Job:
    id: str
    engine: str
    method: str
    status: str = "queued"          # queued | running | done | failed
    chosen: str | None = None       # the method ``refine`` used (``auto`` resolves to one)
    error: str | None = None
    created: float = 0.0
    finished: float | None = None

    def as_json(self) -> dict:
        return {"id": self.id, "engine": self.engine, "status": self.status, "method": self.method,
                "chosen": self.chosen, "error": self.error}


def refine_methods() -> list[str]:
    return sorted({"auto", *lifecycle.REFINERS, *CLASSIFIERS})


class Jobs:
    def __init__(self, store: EngineStore):
        self.store = store
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fewshot-refine")

    def submit(self, engine: str, method: str) -> Job:
        handle = self.store.get(engine)
        if method not in refine_methods():
            raise InvalidInputError(f"unknown refinement method {method!r}; choose one of {refine_methods()}")
        if not handle.engine.classes:
            raise NotFittedError(f"engine {engine!r} has no classes; add classes before refining")
        job = Job(uuid.uuid4().hex, engine, method, created=time.time())
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_KEPT_JOBS:
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job, handle)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(f"unknown job {job_id!r} (jobs are kept in memory until the server restarts)")
        return job

    def _run(self, job: Job, handle: Handle) -> None:
        job.status = "running"
        try:
            if handle.deleted:
                raise InvalidInputError(f"engine {handle.name!r} was deleted")
            job.chosen = handle.engine.refine(job.method)
            self.store.compact(handle)
            job.status = "done"
        except Exception as exc:  # the engine is unchanged by a failed refine
            log.warning("refine job %s on %s failed: %s", job.id, job.engine, exc)
            job.error, job.status = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            job.finished = time.time()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
