"""Every endpoint over real HTTP on 127.0.0.1, every error status, and bad requests that change nothing."""
from __future__ import annotations

import pytest

from tests.serve.conftest import TOKEN, Live


def state(srv: Live) -> tuple:
    """What a refused request must leave unchanged: engines, their classes and the journals' bytes."""
    status, engines = srv.call("GET", "/v1/engines")
    assert status == 200
    classes = {e["name"]: srv.call("GET", f"/v1/engines/{e['name']}/classes")[1] for e in engines["engines"]}
    journals = {p.name: p.read_bytes() for p in sorted((srv.root / ".journal").glob("*"))}
    return engines, classes, journals


def populate(srv: Live, engine: str = "e") -> None:
    assert srv.call("PUT", f"/v1/engines/{engine}")[0] == 201
    assert srv.call("POST", f"/v1/engines/{engine}/classes",
                    {"name": "card", "examples": ["lost card", "card gone"]})[0] == 201
    assert srv.call("POST", f"/v1/engines/{engine}/classes",
                    {"name": "hello", "examples": ["hi"], "description": "a greeting"})[0] == 201


def test_health_openapi_and_metrics(live):
    assert live.call("GET", "/healthz") == (200, {"status": "ok", "engines": 0})
    status, schema = live.call("GET", "/openapi.json")
    assert status == 200 and "/v1/engines/{engine}/classify" in schema["paths"]
    populate(live)
    live.call("POST", "/v1/engines/e/classify", {"inputs": ["hi"]})
    live.call("GET", "/v1/engines/nope/classes")
    status, text = live.call("GET", "/metrics")
    assert status == 200
    assert 'fewshot_http_requests_total{route="/v1/engines/{engine}/classify",method="POST",status="200"} 1' in text
    assert 'fewshot_http_errors_total{route="/v1/engines/{engine}/classes",status="404"} 1' in text
    assert 'fewshot_http_request_duration_seconds_bucket{route="/v1/engines/{engine}/classify",method="POST",' \
           'le="+Inf"} 1' in text
    assert "fewshot_engines 1" in text


def test_engine_lifecycle(live):
    assert live.call("GET", "/v1/engines") == (200, {"engines": []})
    assert live.call("PUT", "/v1/engines/e", {}) == (201, {"name": "e", "encoder": "fake-text", "classes": 0,
                                                          "examples": 0})
    status, body = live.call("PUT", "/v1/engines/e")
    assert status == 409 and body["error"]["type"] == "EngineExistsError"
    assert live.call("GET", "/v1/engines")[1]["engines"][0]["name"] == "e"
    assert (live.root / "e" / "CURRENT").is_file()
    assert live.call("DELETE", "/v1/engines/e") == (200, {"deleted": "e"})
    assert not (live.root / "e").exists()
    status, body = live.call("DELETE", "/v1/engines/e")
    assert status == 404 and body["error"]["type"] == "UnknownEngineError"
    assert live.call("GET", "/v1/engines") == (200, {"engines": []})  # .journal is not an engine


@pytest.mark.filterwarnings("ignore:rejection is not calibrated")
def test_classes_examples_classify(live):
    populate(live)
    status, body = live.call("POST", "/v1/engines/e/classes/card/examples", {"examples": ["my card is gone"]})
    assert status == 200 and body == {"name": "card", "examples": ["lost card", "card gone", "my card is gone"],
                                      "n_examples": 3, "description": None}
    status, body = live.call("GET", "/v1/engines/e/classes")
    assert status == 200 and [c["name"] for c in body["classes"]] == ["card", "hello"]
    assert body["classes"][1] == {"name": "hello", "examples": ["hi"], "n_examples": 1, "description": "a greeting"}
    status, body = live.call("POST", "/v1/engines/e/classify", {"inputs": ["lost card", "hi"], "top_k": 2})
    assert status == 200
    preds = body["predictions"]
    assert [p["label"] for p in preds] == ["card", "hello"]
    assert len(preds[0]["top_k"]) == 2 and preds[0]["top_k"][0]["label"] == "card"
    assert 0 <= preds[0]["score"] <= 1
    status, body = live.call("POST", "/v1/engines/e/classify", {"inputs": ["lost card"], "reject": True})
    assert status == 200 and len(body["predictions"]) == 1
    assert live.call("DELETE", "/v1/engines/e/classes/hello") == (200, {"deleted": "hello"})
    assert [c["name"] for c in live.call("GET", "/v1/engines/e/classes")[1]["classes"]] == ["card"]
    # zero-shot: a class from a description alone
    assert live.call("POST", "/v1/engines/e/classes", {"name": "bye", "description": "saying goodbye"})[0] == 201


def test_auth(secured):
    assert secured.call("GET", "/healthz", token=None)[0] == 200          # no auth on health
    for method, path in [("GET", "/v1/engines"), ("PUT", "/v1/engines/e"), ("GET", "/v1/jobs/x"),
                         ("POST", "/v1/engines/e/classify")]:
        for token in (None, "wrong", TOKEN + "x"):
            status, body = secured.call(method, path, {"inputs": ["x"]} if method == "POST" else None, token=token)
            assert status == 401, (method, path, token)
            assert body["error"]["type"] == "AuthenticationError"
    status, _ = secured.call("GET", "/v1/engines", token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    assert secured.call("GET", "/v1/engines")[0] == 200
    assert secured.call("GET", "/v1/engines", token=None)[0] == 401
    assert secured.call("PUT", "/v1/engines/e", token=None)[0] == 401
    assert secured.call("GET", "/v1/engines")[1] == {"engines": []}   # the refused PUT created nothing


BAD = [  # (method, path, body, status, error type)
    ("GET", "/v1/engines/nope/classes", None, 404, "UnknownEngineError"),
    ("POST", "/v1/engines/nope/classify", {"inputs": ["x"]}, 404, "UnknownEngineError"),
    ("DELETE", "/v1/engines/e/classes/nope", None, 404, "UnknownClassError"),
    ("POST", "/v1/engines/e/classes/nope/examples", {"examples": ["x"]}, 404, "UnknownClassError"),
    ("GET", "/v1/jobs/nope", None, 404, "UnknownJobError"),
    ("GET", "/v1/nothing-here", None, 404, "ServiceError"),
    ("PUT", "/v1/engines/e", None, 409, "EngineExistsError"),
    ("POST", "/v1/engines/e/classes", {"name": "card", "examples": ["x"]}, 409, "DuplicateClassError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x"] * 9}, 413, "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x" * 101]}, 413, "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classes", {"name": "n" * 101, "examples": ["x"]}, 413, "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classes", {"name": "new", "examples": ["x"] * 9}, 413, "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classes/card/examples", {"examples": ["y" * 101]}, 413, "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classes", {"name": "new", "examples": ["x"], "description": "d" * 101}, 413,
     "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x" * 99] * 8, "pad": "p" * 5000}, 413, "RequestTooLargeError"),
    ("POST", "/v1/engines/e/classify", {"inputs": []}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": "x"}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": [1]}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x"], "top_k": 0}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x"], "top_k": "2"}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x"], "reject": 1}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["x"], "extra": 1}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classify", {"inputs": ["\ud800"]}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classes", {"name": "empty"}, 422, "EmptyClassError"),
    ("POST", "/v1/engines/e/classes", {"name": "empty", "examples": []}, 422, "EmptyClassError"),
    ("POST", "/v1/engines/e/classes", {"name": "", "examples": ["x"]}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classes", {"name": "a/b", "examples": ["x"]}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classes", {"name": "blank", "description": "  "}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classes", {"examples": ["x"]}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/classes/card/examples", {"examples": []}, 422, "InvalidInputError"),
    ("PUT", "/v1/engines/new", {"encoder": "minilm"}, 422, "InvalidInputError"),  # not offered
    ("PUT", "/v1/engines/.hidden", None, 422, "InvalidInputError"),
    ("PUT", "/v1/engines/" + "x" * 65, None, 422, "InvalidInputError"),
    ("POST", "/v1/engines/e/refine", {"method": "nonsense"}, 422, "InvalidInputError"),
    ("POST", "/v1/engines/empty/refine", {"method": "auto"}, 409, "NotFittedError"),
    ("POST", "/v1/engines/empty/classify", {"inputs": ["x"]}, 409, "NotFittedError"),
    ("DELETE", "/v1/engines/e/classify", None, 405, "ServiceError"),
]


@pytest.mark.parametrize("method,path,body,status,kind", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_are_typed_errors_and_change_nothing(secured, method, path, body, status, kind):
    populate(secured)
    assert secured.call("PUT", "/v1/engines/empty")[0] == 201
    before = state(secured)
    got, answer = secured.call(method, path, body)
    assert got == status, answer
    assert answer["error"]["type"] == kind and answer["error"]["message"]
    assert state(secured) == before


def test_malformed_bodies(secured):
    populate(secured)
    before = state(secured)
    for raw in (b"{", b"null", b"[]", b'{"inputs": ["x"],}', "{\"inputs\": [\"é\"]}".encode("latin-1"), b"\xff"):
        status, answer = secured.call("POST", "/v1/engines/e/classify", raw=raw)
        assert status == 422, (raw, answer)
        assert answer["error"]["type"] == "InvalidInputError"
    status, answer = secured.call("POST", "/v1/engines/e/classes", raw=b"x" * 5000)
    assert status == 413 and answer["error"]["type"] == "RequestTooLargeError"
    assert state(secured) == before


def test_a_mutation_is_journaled_before_it_is_answered(live):
    populate(live)
    lines = (live.root / ".journal" / "e.jsonl").read_text().splitlines()
    assert [line.split('"op": ')[1].split(",")[0] for line in lines] == ['"add_class"', '"add_class"']
