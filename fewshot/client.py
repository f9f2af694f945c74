"""A dependency-free Python client for ``fewshot serve`` (standard library only: no fastapi, no httpx).

    from fewshot.client import Client
    c = Client("http://127.0.0.1:8000", token=None)
    c.create_engine("support")
    c.add_class("support", "card_lost", examples=["I lost my card"], description="the customer lost a card")
    c.classify("support", ["where is my card?"], top_k=3)      # [Prediction(label, score, top_k)]
    job = c.refine("support", "auto"); c.wait(job)              # {"status": "done", ...}

    eng = c.engine("support")                                   # the FewShotEngine-like view of one engine
    eng.add_examples("card_lost", ["my card is gone"]); eng.predict(["hi"]); eng.classes

An error answer raises the same ``fewshot.errors`` class the engine would raise in-process (``UnknownClassError``,
``DuplicateClassError``, ``InvalidInputError`` …), read from the answer's ``{"error": {"type", "message"}}``; the
errors only a service has are defined here (the server imports them from this module).
"""
from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fewshot import errors
from fewshot.errors import (  # the service's errors live in fewshot.errors; re-exported here for client users
    AuthenticationError,
    ConnectionLostError,
    EngineExistsError,
    FewShotError,
    InvalidInputError,
    RequestTooLargeError,
    ServiceError,
    UnknownEngineError,
    UnknownJobError,
)

__all__ = ["AuthenticationError", "Client", "ConnectionLostError", "EngineExistsError", "Prediction",
           "RemoteEngine", "RequestTooLargeError", "ServiceError", "UnknownEngineError", "UnknownJobError"]


#: error classes the client can raise, by the ``type`` name the service writes
ERROR_TYPES: dict[str, type[FewShotError]] = {
    name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, FewShotError)}


def error_from_answer(status: int, body: bytes) -> FewShotError:
    """The exception an error answer stands for."""
    try:
        err = json.loads(body.decode("utf-8"))["error"]
        kind, message = str(err["type"]), str(err["message"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return ServiceError(f"HTTP {status}: {body[:500].decode('utf-8', 'replace')}", status)
    cls = ERROR_TYPES.get(kind)
    if cls is None or cls is ServiceError:
        return ServiceError(f"{kind}: {message}", status)
    exc = cls(message)
    exc.status = status  # type: ignore[attr-defined]
    return exc


@dataclass(frozen=True)
class Prediction:
    """One input's result, as ``fewshot.engine.Prediction``: ``label`` (None when rejected), ``score``,
    ``top_k`` = [(label, score), ...] best first."""

    label: str | None
    score: float
    top_k: list[tuple[str, float]] = field(default_factory=list)


class Client:
    """Talks to one ``fewshot serve`` at ``url``; ``token`` is sent as ``Authorization: Bearer <token>``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"url must start with http:// or https://, got {url!r}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, float(timeout)

    # ------------------------------------------------------------------ transport
    def request(self, method: str, path: str, body: Any = None, expect_json: bool = True) -> Any:
        """One request; returns the decoded JSON answer (or text when not ``expect_json``), raises on errors."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token is not None:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (http(s) only, checked)
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise error_from_answer(exc.code, exc.read()) from None
        except http.client.IncompleteRead as exc:   # headers came, the body was cut off
            raise ConnectionLostError(
                f"{method} {path}: the service closed the connection after {len(exc.partial)} of "
                f"{len(exc.partial) + (exc.expected or 0)} bytes of its answer; the request may or may not have "
                "taken effect") from None
        except http.client.HTTPException as exc:   # e.g. RemoteDisconnected: closed before the status line
            raise ConnectionLostError(f"{method} {path}: the service's answer was cut off or unreadable "
                                      f"({type(exc).__name__}: {exc}); the request may or may not have taken "
                                      "effect") from None
        if not expect_json:
            return raw.decode("utf-8")
        return json.loads(raw.decode("utf-8")) if raw else None

    @staticmethod
    def _q(name: str) -> str:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"a name must be a non-empty string, got {name!r}")
        return urllib.parse.quote(name, safe="")

    # ------------------------------------------------------------------ service
    def health(self) -> bool:
        return self.request("GET", "/healthz").get("status") == "ok"

    def metrics(self) -> str:
        return self.request("GET", "/metrics", expect_json=False)

    def engines(self) -> list[dict]:
        """[{"name", "encoder", "classes", "examples"}] of every engine."""
        return self.request("GET", "/v1/engines")["engines"]

    def create_engine(self, engine: str, encoder: str | None = None) -> dict:
        return self.request("PUT", f"/v1/engines/{self._q(engine)}", {} if encoder is None else {"encoder": encoder})

    def delete_engine(self, engine: str) -> None:
        self.request("DELETE", f"/v1/engines/{self._q(engine)}")

    def engine(self, engine: str) -> RemoteEngine:
        """A ``FewShotEngine``-like view of one engine on the service."""
        return RemoteEngine(self, engine)

    # ------------------------------------------------------------------ classes
    def classes(self, engine: str) -> list[dict]:
        """[{"name", "examples": [texts], "n_examples", "description"}] in the engine's column order."""
        return self.request("GET", f"/v1/engines/{self._q(engine)}/classes")["classes"]

    def add_class(self, engine: str, name: str, examples: Sequence[str] | None = None,
                  description: str | None = None) -> dict:
        body: dict[str, Any] = {"name": name, "examples": list(examples or [])}
        if description is not None:
            body["description"] = description
        return self.request("POST", f"/v1/engines/{self._q(engine)}/classes", body)

    def add_examples(self, engine: str, name: str, examples: Sequence[str]) -> dict:
        return self.request("POST", f"/v1/engines/{self._q(engine)}/classes/{self._q(name)}/examples",
                            {"examples": list(examples)})

    def remove_class(self, engine: str, name: str) -> None:
        self.request("DELETE", f"/v1/engines/{self._q(engine)}/classes/{self._q(name)}")

    # ------------------------------------------------------------------ prediction, refinement
    def classify(self, engine: str, inputs: Sequence[str], top_k: int = 1, reject: bool = False) -> list[Prediction]:
        answer = self.request("POST", f"/v1/engines/{self._q(engine)}/classify",
                              {"inputs": list(inputs), "top_k": top_k, "reject": reject})
        return [Prediction(p["label"], float(p["score"]), [(t["label"], float(t["score"])) for t in p["top_k"]])
                for p in answer["predictions"]]

    def refine(self, engine: str, method: str = "auto") -> str:
        """Start a refine; returns the job id (``job(id)`` / ``wait(id)``)."""
        return self.request("POST", f"/v1/engines/{self._q(engine)}/refine", {"method": method})["job"]

    def job(self, job_id: str) -> dict:
        """{"id", "engine", "status": queued|running|done|failed, "method", "chosen", "error"}."""
        return self.request("GET", f"/v1/jobs/{self._q(job_id)}")

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.05) -> dict:
        """Poll a job until it is done or failed (at most ``timeout`` seconds); returns its last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if status["status"] in ("done", "failed"):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout:.0f} s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)


class RemoteEngine:
    """The ``FewShotEngine`` methods an application uses, on one engine of a service."""

    def __init__(self, client: Client, name: str):
        self.client, self.name = client, name

    @property
    def classes(self) -> list[str]:
        return [c["name"] for c in self.client.classes(self.name)]

    def add_class(self, name: str, examples: Sequence[str] | None = None, description: str | None = None) -> None:
        self.client.add_class(self.name, name, examples, description)

    def add_examples(self, name: str, examples: Sequence[str]) -> None:
        self.client.add_examples(self.name, name, examples)

    def remove_class(self, name: str) -> None:
        self.client.remove_class(self.name, name)

    def predict(self, inputs: Sequence[str], top_k: int = 1, reject: bool = False) -> list[Prediction]:
        return self.client.classify(self.name, inputs, top_k=top_k, reject=reject)

    def refine(self, method: str = "auto", timeout: float = 600.0) -> str:
        """Refine and wait; returns the method used (raises ``ServiceError`` when the job failed)."""
        status = self.client.wait(self.client.refine(self.name, method), timeout=timeout)
        if status["status"] != "done":
            raise ServiceError(f"refine of {self.name!r} failed: {status.get('error')}")
        return str(status.get("chosen") or method)
