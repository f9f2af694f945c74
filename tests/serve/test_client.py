"""``fewshot.client.Client`` round trip over HTTP; the Python API and the server read each other's saves;
a refine job while classify keeps answering."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from fewshot.client import (
    AuthenticationError,
    Client,
    ConnectionLostError,
    EngineExistsError,
    RequestTooLargeError,
    UnknownEngineError,
    UnknownJobError,
)
from fewshot.engine.engine import FewShotEngine
from fewshot.errors import DuplicateClassError, EmptyClassError, InvalidInputError, NotFittedError, UnknownClassError
from tests.fakes import FakeTextEncoder
from tests.serve.conftest import TOKEN, live_server

PROBES = ["lost card", "hello there", "refund please", "what", "card gone", "hi"]


def test_client_round_trip_and_typed_errors(secured):
    c = Client(secured.url, token=TOKEN)
    assert c.health()
    assert c.create_engine("e")["name"] == "e"
    with pytest.raises(EngineExistsError):
        c.create_engine("e")
    c.add_class("e", "card", ["lost card", "card gone"])
    c.add_class("e", "hello", description="a greeting")
    c.add_examples("e", "hello", ["hi"])
    assert [x["name"] for x in c.classes("e")] == ["card", "hello"]
    assert c.engines() == [{"name": "e", "encoder": "fake-text", "classes": 2, "examples": 3}]
    preds = c.classify("e", ["lost card", "hi"], top_k=2)
    assert [p.label for p in preds] == ["card", "hello"] and len(preds[0].top_k) == 2
    with pytest.raises(DuplicateClassError):
        c.add_class("e", "card", ["x"])
    with pytest.raises(UnknownClassError):
        c.add_examples("e", "nope", ["x"])
    with pytest.raises(UnknownClassError):
        c.remove_class("e", "nope")
    with pytest.raises(EmptyClassError):
        c.add_class("e", "empty")
    with pytest.raises(InvalidInputError):
        c.classify("e", [])
    with pytest.raises(RequestTooLargeError):
        c.classify("e", ["x"] * 9)
    with pytest.raises(UnknownEngineError):
        c.classes("nope")
    with pytest.raises(UnknownJobError):
        c.job("nope")
    c.create_engine("empty")
    with pytest.raises(NotFittedError):
        c.classify("empty", ["x"])
    with pytest.raises(AuthenticationError):
        Client(secured.url).engines()
    with pytest.raises(AuthenticationError):
        Client(secured.url, token="wrong").engines()
    assert "fewshot_http_requests_total" in c.metrics()
    eng = c.engine("e")
    eng.remove_class("hello")
    assert eng.classes == ["card"]
    assert eng.predict(["x"])[0].label == "card"
    c.delete_engine("empty")
    assert [x["name"] for x in c.engines()] == ["e"]


def test_the_client_imports_without_fastapi():
    code = ("import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None; sys.modules['httpx'] = None\n"
            "import fewshot.client; print(fewshot.client.Client('http://127.0.0.1:1').url)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://127.0.0.1:1"


def test_an_answer_cut_off_mid_body_raises_connection_lost():
    """A server killed after its headers went out (kill -9 mid-answer) is a typed ConnectionLostError, which is a
    ConnectionError, not http.client's IncompleteRead."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_half_once() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:   # read the whole request, so closing sends FIN, not RST
                request += conn.recv(65536)
            head, body = request.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 522\r\n\r\n{\"na")
            conn.shutdown(socket.SHUT_WR)
        listener.close()

    server = threading.Thread(target=answer_half_once, daemon=True)
    server.start()
    with pytest.raises(ConnectionLostError, match="after 4 of 522 bytes") as caught:
        Client(f"http://127.0.0.1:{port}", timeout=10).add_examples("e", "c", ["x"])
    assert isinstance(caught.value, ConnectionError)
    server.join(timeout=10)


def _scores(preds) -> list:
    return [(p.label, round(p.score, 5), [(lab, round(s, 5)) for lab, s in p.top_k]) for p in preds]


def test_the_python_api_and_the_server_read_each_others_saves(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    # a save made by the Python API is an engine of the server
    eng = FewShotEngine(encoder=FakeTextEncoder())
    eng.add_class("card", ["lost card", "card gone"])
    eng.add_class("hello", ["hi", "hello there"], description="a greeting")
    eng.save(root / "from_python")
    expected = _scores(eng.predict(PROBES, top_k=2))
    with live_server(root) as srv:
        c = Client(srv.url)
        assert [x["name"] for x in c.engines()] == ["from_python"]
        assert _scores(c.classify("from_python", PROBES, top_k=2)) == expected
        c.create_engine("from_server")
        c.add_class("from_server", "refund", ["refund please", "money back"])
        c.add_class("from_server", "card", ["lost card"])
        c.add_examples("from_python", "card", ["my card is gone"])
        served = {name: _scores(c.classify(name, PROBES, top_k=2)) for name in ("from_python", "from_server")}
    # after the server stopped (compacted), the Python API loads what it served
    for name, scores in served.items():
        loaded = FewShotEngine.load(root / name, encoder=FakeTextEncoder())
        assert _scores(loaded.predict(PROBES, top_k=2)) == scores
    assert FewShotEngine.load(root / "from_python", encoder=FakeTextEncoder()).raw_examples["card"][-1] == \
        "my card is gone"


def test_refine_job_runs_in_the_background_and_is_durable(tmp_path):
    root = tmp_path / "root"
    with live_server(root) as srv:
        c = Client(srv.url)
        c.create_engine("e")
        for i, topic in enumerate(["card", "refund", "hello"]):
            c.add_class("e", topic, [f"{topic} {j}" for j in range(6)] + [f"x{i}"])
        answers: list = []
        stop = threading.Event()

        def classify_meanwhile() -> None:
            while not stop.is_set() and len(answers) < 200:
                answers.append(c.classify("e", ["card 1"])[0].label)

        t = threading.Thread(target=classify_meanwhile)
        t.start()
        job = c.refine("e", "linear")
        status = c.wait(job, timeout=120)
        stop.set()
        t.join(timeout=30)
        assert status["status"] == "done", status
        assert status["chosen"] == "linear" and status["error"] is None
        assert answers and set(answers) == {"card"}
        failed = c.wait(c.refine("e", "encoder"), timeout=120)   # not applicable to the fake encoder
        assert failed["status"] == "failed" and failed["error"]
        after = _scores(c.classify("e", PROBES, top_k=2))
    loaded = FewShotEngine.load(root / "e", encoder=FakeTextEncoder())
    assert loaded.classifier_name == "linear"
    assert _scores(loaded.predict(PROBES, top_k=2)) == after
    assert np.isfinite(loaded.predict_proba(PROBES)).all()
