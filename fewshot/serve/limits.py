"""Request limits (HTTP 413): body bytes (an ASGI middleware, before any parsing), inputs per request and
characters per text (checked by the routes)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fewshot.errors import InvalidInputError, RequestTooLargeError


@dataclass(frozen=True)
class Limits:
    """``max_body_bytes``: request body; ``max_inputs``: texts per classify / examples per add;
    ``max_text_chars``: characters in one text, class name or description."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 256
    max_text_chars: int = 10_000

    def __post_init__(self) -> None:
        for key in ("max_body_bytes", "max_inputs", "max_text_chars"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{key} must be a positive integer, got {value!r}")

    def check_texts(self, texts: Sequence[str], what: str) -> None:
        if len(texts) > self.max_inputs:
            raise RequestTooLargeError(f"{what} holds {len(texts)} items; this service takes at most "
                                       f"{self.max_inputs} per request (--max-inputs)")
        for i, t in enumerate(texts):
            self.check_text(t, f"{what}[{i}]")

    def check_text(self, text: str | None, what: str) -> None:
        if text is not None and len(text) > self.max_text_chars:
            raise RequestTooLargeError(f"{what} has {len(text)} characters; this service takes at most "
                                       f"{self.max_text_chars} (--max-text-chars)")


#: a refused body up to this size is read to its end before the 413 is sent (larger ones: the connection is closed)
DRAIN_BYTES = 64 << 20


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message}}).encode("utf-8")


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is over ``limit`` bytes (declared or streamed), before the app reads
    it; smaller bodies are read here and replayed to the app."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = False
            if too_big:
                if int(declared) <= DRAIN_BYTES:
                    await self._drain(receive)
                await self._refuse(scope, send, f"the request body has {int(declared)} bytes")
                return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                if message.get("more_body", False):
                    await self._drain(receive, size)
                await self._refuse(scope, send, "the request body is over the limit")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _drain(receive: Any, size: int = 0) -> None:
        """Read (and drop) the rest of a refused body, up to ``DRAIN_BYTES``, so that a client still sending it
        reads the 413 instead of a broken pipe."""
        while size <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, scope: dict, send: Any, what: str) -> None:
        scope.setdefault("state", {})["body_refused"] = True
        payload = error_body("RequestTooLargeError", f"{what}; this service takes at most {self.limit} bytes "
                                                     "(--max-body-bytes)")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
