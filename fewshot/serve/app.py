"""The FastAPI application of ``fewshot serve``: routes, auth, the error shape, limits and metrics.

    app = create_app("engines/", encoder="minilm", token=None)        # what `fewshot serve` runs on uvicorn
    app = create_app(tmp, encoder="fake-text", encoder_factory=lambda name: FakeTextEncoder())   # tests

Every error answer is ``{"error": {"type": "<exception class>", "message": "..."}}``: 401 auth, 404 unknown
engine / class / job / route, 409 duplicate or existing engine (and classify / refine on an engine without
classes), 413 over a limit, 422 invalid input (pydantic's validation errors included)."""
# no "from __future__ import annotations": FastAPI reads the route signatures, some of which name locals
import hmac
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from fewshot._core import __version__
from fewshot.errors import (
    AuthenticationError,
    CorruptIndexError,
    DuplicateClassError,
    EncoderUnavailableError,
    EngineExistsError,
    FewShotError,
    InvalidInputError,
    NotFittedError,
    RequestTooLargeError,
    UnknownClassError,
    UnknownEngineError,
    UnknownJobError,
)
from fewshot.serve import models as m
from fewshot.serve.jobs import Jobs, refine_methods
from fewshot.serve.limits import BodyLimitMiddleware, Limits
from fewshot.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from fewshot.serve.store import ENGINE_NAME_PATTERN, EncoderFactory, EngineStore, Handle, check_text_encoder

log = logging.getLogger("fewshot.serve")

#: exception class → HTTP status (first match along the class's MRO order below)
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthenticationError, 401),
    (UnknownEngineError, 404), (UnknownJobError, 404), (UnknownClassError, 404),
    (EngineExistsError, 409), (DuplicateClassError, 409), (NotFittedError, 409),
    (RequestTooLargeError, 413),
    (EncoderUnavailableError, 422), (InvalidInputError, 422),
    (CorruptIndexError, 500),
    (FewShotError, 422),
)


def status_of(exc: BaseException) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def error_answer(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {401: "missing or wrong bearer token", 404: "unknown engine, class or job",
            409: "duplicate class, existing engine, or an engine without classes",
            413: "over a request limit", 422: "invalid input"}
    return {code: {"model": m.ErrorAnswer, "description": what[code]} for code in codes}


EngineName = Annotated[str, PathParam(pattern=ENGINE_NAME_PATTERN, description="engine name")]
ClassName = Annotated[str, PathParam(min_length=1, description="class name")]


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(root: str | os.PathLike, *, encoder: str = "minilm", encoders: Sequence[str] = (),
               encoder_factory: EncoderFactory | None = None, token: str | None = None,
               limits: Limits | None = None, compact_every: int = 1000) -> FastAPI:
    """The service over the engines under ``root`` (loaded, journals replayed and compacted here, before the app
    is returned). ``encoder``: the encoder of engines created without one; ``encoders``: further names a client
    may ask for; ``encoder_factory``: builds encoders from names (default: the registry); ``token``: required as
    ``Authorization: Bearer <token>`` on every ``/v1`` route."""
    limits = limits or Limits()
    if token is not None and not token:
        raise InvalidInputError("the token must not be empty")
    allowed = sorted({encoder, *encoders})
    store = EngineStore(root, encoder_factory=encoder_factory, compact_every=compact_every)
    store.open_all()
    jobs = Jobs(store)
    EngineCreate = m.engine_create_model(allowed)
    RefineRequest = m.refine_request_model(refine_methods())
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.shutdown()
        store.close()

    app = FastAPI(title="fewshot serve", version=__version__, lifespan=lifespan,
                  description="Few-shot and zero-shot text classification: named engines, classes registered at "
                              "runtime, durable mutations (write-ahead journal), background refinement.")
    app.state.store, app.state.jobs, app.state.metrics, app.state.limits = store, jobs, metrics, limits

    # ------------------------------------------------------------------ errors
    @app.exception_handler(FewShotError)
    async def fewshot_error(request: Request, exc: FewShotError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_answer(status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_answer(422, "InvalidInputError", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not even JSON (e.g. invalid UTF-8): invalid input, as 422
            return error_answer(422, "InvalidInputError", f"the request body cannot be parsed: {exc.detail}")
        return error_answer(exc.status_code, "ServiceError", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_answer(500, "ServiceError", f"internal error: {type(exc).__name__}")

    # ------------------------------------------------------------------ auth
    bearer = HTTPBearer(auto_error=False, description="the token of --token-file")
    expected = token.encode("utf-8") if token is not None else None

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if expected is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
            raise AuthenticationError("this service needs 'Authorization: Bearer <token>' with the token of its "
                                      "--token-file" + ("" if credentials is None else "; the token is wrong"))

    guarded = [401] if token is not None else []
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)] if token is not None else [])

    # ------------------------------------------------------------------ helpers
    def engine_info(handle: Handle) -> m.EngineInfo:
        return m.EngineInfo(name=handle.name, encoder=handle.encoder_name, classes=len(handle.engine.classes),
                            examples=len(handle.engine.index))

    def class_info(handle: Handle, name: str) -> m.ClassInfo:
        engine = handle.engine
        entry = engine.index.entry(name)
        kept = [x for x in engine.raw_examples.get(name, []) if isinstance(x, str)]
        return m.ClassInfo(name=name, examples=kept, n_examples=len(entry.ids), description=entry.description)

    # ------------------------------------------------------------------ service routes
    @app.get("/healthz", response_model=m.Health, tags=["service"])
    def healthz() -> m.Health:
        return m.Health(status="ok", engines=len(store.names()))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    def metrics_text() -> PlainTextResponse:
        gauges = {"fewshot_engines": ("Engines held by the service.", float(len(store.names())))}
        return PlainTextResponse(metrics.render(gauges), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------------ engines
    @v1.get("/engines", response_model=m.EngineList, responses=_responses(*guarded), tags=["engines"])
    def list_engines() -> m.EngineList:
        out = []
        for name in store.names():
            try:
                out.append(engine_info(store.get(name)))
            except UnknownEngineError:  # deleted meanwhile
                continue
        return m.EngineList(engines=out)

    @v1.put("/engines/{engine}", status_code=201, response_model=m.EngineInfo,
            responses=_responses(*guarded, 409, 413, 422), tags=["engines"])
    def create_engine(engine: EngineName, body: EngineCreate | None = None) -> m.EngineInfo:  # type: ignore[valid-type]
        name = getattr(body, "encoder", None) or encoder
        if name not in allowed:
            raise EncoderUnavailableError(f"encoder {name!r} is not offered by this service; choose one of "
                                          f"{allowed} (start it with --allow-encoder NAME for more)")
        return engine_info(store.create(engine, name))

    @v1.delete("/engines/{engine}", response_model=m.Deleted, responses=_responses(*guarded, 404, 422),
               tags=["engines"])
    def delete_engine(engine: EngineName) -> m.Deleted:
        store.delete(engine)
        return m.Deleted(deleted=engine)

    # ------------------------------------------------------------------ classes
    @v1.get("/engines/{engine}/classes", response_model=m.ClassList, responses=_responses(*guarded, 404, 422),
            tags=["classes"])
    def list_classes(engine: EngineName) -> m.ClassList:
        handle = store.get(engine)
        with handle.lock:
            return m.ClassList(classes=[class_info(handle, c) for c in handle.engine.classes])

    @v1.post("/engines/{engine}/classes", status_code=201, response_model=m.ClassInfo,
             responses=_responses(*guarded, 404, 409, 413, 422), tags=["classes"])
    def add_class(engine: EngineName, body: m.ClassCreate) -> m.ClassInfo:
        limits.check_text(body.name, "name")
        limits.check_texts(body.examples, "examples")
        limits.check_text(body.description, "description")
        args: dict[str, Any] = {"name": body.name, "examples": list(body.examples)}
        if body.description is not None:
            args["description"] = body.description
        handle = store.mutate(engine, "add_class", args)
        with handle.lock:
            return class_info(handle, body.name)

    @v1.delete("/engines/{engine}/classes/{name}", response_model=m.Deleted,
               responses=_responses(*guarded, 404, 422), tags=["classes"])
    def remove_class(engine: EngineName, name: ClassName) -> m.Deleted:
        store.mutate(engine, "remove_class", {"name": name})
        return m.Deleted(deleted=name)

    @v1.post("/engines/{engine}/classes/{name}/examples", response_model=m.ClassInfo,
             responses=_responses(*guarded, 404, 413, 422), tags=["classes"])
    def add_examples(engine: EngineName, name: ClassName, body: m.ExamplesAdd) -> m.ClassInfo:
        limits.check_texts(body.examples, "examples")
        handle = store.mutate(engine, "add_examples", {"name": name, "examples": list(body.examples)})
        with handle.lock:
            return class_info(handle, name)

    # ------------------------------------------------------------------ prediction, refinement
    @v1.post("/engines/{engine}/classify", response_model=m.ClassifyAnswer,
             responses=_responses(*guarded, 404, 409, 413, 422), tags=["prediction"])
    def classify(engine: EngineName, body: m.ClassifyRequest) -> m.ClassifyAnswer:
        limits.check_texts(body.inputs, "inputs")
        handle = store.get(engine)
        check_text_encoder(handle)
        predictions = handle.engine.predict(body.inputs, top_k=body.top_k, reject=body.reject)
        return m.ClassifyAnswer(predictions=[
            m.PredictionOut(label=p.label, score=p.score, top_k=[m.Scored(label=lab, score=s) for lab, s in p.top_k])
            for p in predictions])

    @v1.post("/engines/{engine}/refine", status_code=202, response_model=m.JobAccepted,
             responses=_responses(*guarded, 404, 409, 413, 422), tags=["prediction"])
    def refine(engine: EngineName, body: RefineRequest | None = None) -> m.JobAccepted:  # type: ignore[valid-type]
        return m.JobAccepted(job=jobs.submit(engine, getattr(body, "method", None) or "auto").id)

    @v1.get("/jobs/{job_id}", response_model=m.JobStatus, responses=_responses(*guarded, 404, 422),
            tags=["prediction"])
    def job_status(job_id: Annotated[str, PathParam(min_length=1)]) -> m.JobStatus:
        return m.JobStatus(**jobs.get(job_id).as_json())

    app.include_router(v1)
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s of the body limit too
    return app
