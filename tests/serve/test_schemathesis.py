"""schemathesis (requests generated from the OpenAPI schema, positive and negative, by a tool no one here wrote)
against the live server with a bounded budget: no 5xx, every answer conforms to the schema (status codes,
content types, bodies), invalid requests are refused. schemathesis's own pytest plugin does not run under this
pytest, so the test drives its Python API: one hypothesis run per operation and generation mode."""
from __future__ import annotations

import re
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from fewshot.client import Client  # noqa: E402
from tests.serve.conftest import TOKEN, live_server  # noqa: E402

MAX_EXAMPLES = 30     # per operation and mode: 12 operations × 2 modes, + 7 pinned
BUDGET_S = 90.0       # the whole run stops early past this (each operation then keeps what it ran)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    with live_server(root, token=TOKEN) as srv:
        c = Client(srv.url, token=TOKEN)
        c.create_engine("e")          # an engine with classes, so generated requests also reach the happy paths
        c.add_class("e", "card", ["lost card", "card gone"])
        c.add_class("e", "hello", ["hi"], description="a greeting")
        yield srv


def test_api_conforms_to_its_schema(api):
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12
    start, ran = time.monotonic(), 0
    failures: list[str] = []
    job = Client(api.url, token=TOKEN).refine("e", "knn")   # cheap: knn needs no training
    # first valid requests on the populated engine and a real job (random names mostly meet 404s), without
    # DELETE; then every operation with generated parameters, valid and invalid
    # (refines last: a classifier refine fits under the engine's lock, so classify waits for it)
    pinned_ops = sorted((op for op in operations if "{engine}" in op.path and op.method.upper() != "DELETE"),
                        key=lambda op: op.path.endswith("/refine"))
    runs: list = [(op, GenerationMode.POSITIVE, {"engine": "e", **({"name": "card"} if "{name}" in op.path else {})})
                  for op in pinned_ops]
    runs += [(op, GenerationMode.POSITIVE, {"job_id": job}) for op in operations if "{job_id}" in op.path]
    runs += [(op, mode, None) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    for operation, mode, pinned in runs:
        if time.monotonic() - start > BUDGET_S:
            break

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            nonlocal ran
            ran += 1
            response = case.call_and_validate(headers=AUTH, timeout=60)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])

        try:
            check()
        except Unsatisfiable:  # an operation without parameters has no invalid request to make
            assert mode is GenerationMode.NEGATIVE and not operation.path.startswith("/v1/engines/")
        except Exception as exc:  # collect every operation's failure, then fail once
            inner = "; ".join(f"{type(e).__name__}: {e}" for e in getattr(exc, "exceptions", ()))
            failures.append(f"{operation.label} [{mode.value}, {pinned}]: {type(exc).__name__}: {str(exc)[:2000]} "
                            f"{inner[:3000]}")
    assert not failures, "\n\n".join(failures)
    assert ran >= 100
    metrics = Client(api.url, token=TOKEN).metrics()
    print(f"schemathesis: {ran} requests")
    assert 'route="/v1/engines/{engine}/classify",method="POST",status="200"' in metrics
    assert not re.search(r'status="5\d\d"', metrics), "the server answered a 5xx"
