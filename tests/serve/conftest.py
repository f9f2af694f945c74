"""A live ``fewshot serve`` app for the tests: uvicorn in a thread on 127.0.0.1, an ephemeral port, the fake text
encoder (``tests.fakes.FakeTextEncoder``) unless a test asks for another."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn  # noqa: E402

from fewshot.serve import Limits, create_app  # noqa: E402
from tests.fakes import FakeTextEncoder  # noqa: E402

TOKEN = "s3cret-token"
FAKE = "fake-text"


def fake_factory(name: str) -> FakeTextEncoder:
    assert name == FAKE, name
    return FakeTextEncoder()


@dataclass
class Live:
    url: str
    root: Path
    app: Any
    token: str | None

    def call(self, method: str, path: str, body: Any = None, token: str | None | bool = True,
             raw: bytes | None = None, headers: dict | None = None) -> tuple[int, Any]:
        """(status, decoded JSON or text) of one request; ``token=True`` sends the server's token."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        tok = self.token if token is True else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload = resp.status, resp.read()
                ctype = resp.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            status, payload, ctype = exc.code, exc.read(), exc.headers.get("content-type", "")
        text = payload.decode()
        return status, json.loads(text) if "json" in ctype and text else text


@contextlib.contextmanager
def live_server(root: Path, token: str | None = None, **options: Any) -> Iterator[Live]:
    """Serve ``create_app(root, ...)`` on 127.0.0.1:<free port> until the block ends (bounded waits)."""
    options.setdefault("encoder", FAKE)
    options.setdefault("encoder_factory", fake_factory)
    app = create_app(root, token=token, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Live(f"http://127.0.0.1:{port}", Path(root), app, token)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A server without auth over an empty root."""
    with live_server(tmp_path / "root") as srv:
        yield srv


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Live]:
    """A server that needs ``TOKEN``, with small limits."""
    with live_server(tmp_path / "root", token=TOKEN,
                     limits=Limits(max_body_bytes=4096, max_inputs=8, max_text_chars=100)) as srv:
        yield srv
