"""The request and answer bodies (pydantic): the OpenAPI schema is generated from these. Requests are strict
(no coercion of "1" to 1) and refuse unknown fields, so a malformed request is a 422, never a guess."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not valid Unicode text ({exc.reason} at position {exc.start})") from None
    return value


def _integral(value: Any) -> Any:
    """JSON numbers with no fraction (2 and 2.0, as JSON Schema's "integer"); not booleans or strings."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


Text = Annotated[str, AfterValidator(_unicode)]
Name = Annotated[str, Field(min_length=1, pattern=r"^[^/]+$",
                            description="a class name: any text without '/' (it appears in URLs)"),
                 AfterValidator(_unicode)]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


NonBlank = Annotated[str, Field(min_length=1, pattern=r"^[\s\S]*\S[\s\S]*$",
                                description="text with at least one non-space character"), AfterValidator(_unicode)]


def one_of(values: Sequence[str]) -> Any:
    """The type ``Literal[values...]`` (an enum in the schema)."""
    return Literal.__getitem__(tuple(values))  # type: ignore[attr-defined]


def engine_create_model(encoders: Sequence[str]) -> type[BaseModel]:
    """``{"encoder": <one of the names the service offers>}`` (all optional)."""
    return create_model("EngineCreate", __base__=Request,
                        encoder=(one_of(encoders) | None,
                                 Field(None, description="an encoder this service offers; default: its --encoder")))


def refine_request_model(methods: Sequence[str]) -> type[BaseModel]:
    return create_model("RefineRequest", __base__=Request,
                        method=(one_of(methods), Field("auto", description="'auto', a refiner ('encoder') or a "
                                                                          "classifier name ('linear', ...)")))


class ClassCreate(Request):
    """A class needs examples, a description, or both."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["description"], "properties": {"description": {"type": "string"}}},
        {"required": ["examples"], "properties": {"examples": {"minItems": 1}}}]})

    name: Name
    examples: list[Text] = Field(default_factory=list, description="example texts (may be empty with a description)")
    description: NonBlank | None = Field(None, description="a description of the class (zero-shot)")


class ExamplesAdd(Request):
    examples: list[Text] = Field(min_length=1)


class ClassifyRequest(Request):
    inputs: list[Text] = Field(min_length=1)
    top_k: Annotated[int, BeforeValidator(_integral)] = Field(1, ge=1, le=1_000_000)
    reject: bool = False


# ---------------------------------------------------------------------- answers
class ErrorDetail(BaseModel):
    type: str = Field(description="the fewshot.errors exception class name")
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
    engines: int


class EngineInfo(BaseModel):
    name: str
    encoder: str
    classes: int
    examples: int


class EngineList(BaseModel):
    engines: list[EngineInfo]


class Deleted(BaseModel):
    deleted: str


class ClassInfo(BaseModel):
    name: str
    examples: list[str] = Field(description="the kept example texts")
    n_examples: int = Field(description="example vectors in the index (texts plus any added as vectors)")
    description: str | None


class ClassList(BaseModel):
    classes: list[ClassInfo]


class Scored(BaseModel):
    label: str
    score: float


class PredictionOut(BaseModel):
    label: str | None = Field(description="the top label; null when rejected (reject=true)")
    score: float
    top_k: list[Scored]


class ClassifyAnswer(BaseModel):
    predictions: list[PredictionOut]


class JobAccepted(BaseModel):
    job: str


class JobStatus(BaseModel):
    id: str
    engine: str
    status: Literal["queued", "running", "done", "failed"]
    method: str
    chosen: str | None
    error: str | None
