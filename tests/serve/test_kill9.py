"""kill -9 durability: a client streams add-class / add-examples / remove-class requests to a `fewshot serve`
subprocess (a real encoder: MiniLM exported to int8 ONNX, loads in about a second) that is SIGKILLed at random
moments and restarted. Every acknowledged mutation is present exactly once, the one in flight at a kill is
applied whole or not at all, and the predictions equal an in-process engine replaying the applied mutations."""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from fewshot.client import Client
from fewshot.engine.engine import FewShotEngine
from tests.onnx_exports import exported

REPO = Path(__file__).resolve().parents[2]
KILLS = 10
TOPICS = ["card", "refund", "transfer", "greeting", "balance", "pin", "limit", "fraud", "address", "fees"]
PROBES = ["my card is lost", "hello", "I want a refund", "change my address", "what are the fees", "pin blocked"]


@pytest.fixture(scope="module")
def int8_dir(minilm) -> Path:
    return exported("minilm", "int8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, encoder: str) -> tuple[subprocess.Popen, Client]:
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "fewshot", "serve", "--root", str(root), "--port", str(port),
                                 "--encoder", encoder, "--log-level", "warning"], cwd=REPO,
                                env={**os.environ, "FEWSHOT_ONNX_THREADS": "1", "PYTHONPATH": str(REPO)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = Client(f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.health():
                    return proc, client
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        proc.kill()
        err = proc.communicate(timeout=10)[1].decode(errors="replace")
        if "address already in use" not in err.lower():
            raise AssertionError(f"server did not start:\n{err[-3000:]}")
    raise AssertionError("no free port")


class Model:
    """The mutations known to be applied, and the state they imply."""

    def __init__(self) -> None:
        self.ops: list[tuple] = []
        self.classes: dict[str, list[str]] = {}
        self.counter = 0

    def next_op(self, rng: random.Random) -> tuple:
        self.counter += 1
        n = self.counter
        free = [t for t in TOPICS if t not in self.classes]
        roll = rng.random()
        if free and (roll < 0.45 or not self.classes):
            t = rng.choice(free)
            return ("add_class", t, [f"{t} question {n} variant {k}" for k in range(rng.randint(1, 4))])
        if roll < 0.85 or len(self.classes) < 3:
            t = rng.choice(sorted(self.classes))
            return ("add_examples", t, [f"more about {t}, message {n}.{k}" for k in range(rng.randint(1, 3))])
        return ("remove_class", rng.choice(sorted(self.classes)), [])

    def apply(self, op: tuple) -> None:
        kind, name, examples = op
        if kind == "add_class":
            self.classes[name] = list(examples)
        elif kind == "add_examples":
            self.classes[name] += examples
        else:
            del self.classes[name]
        self.ops.append(op)

    def was_applied(self, op: tuple, served: dict[str, list[str]]) -> bool:
        """Whether the op in flight at a kill took effect, from the server's state after the restart."""
        kind, name, examples = op
        if kind == "add_class":
            return name in served
        if kind == "remove_class":
            return name not in served
        return served[name] == self.classes[name] + examples


def send(client: Client, op: tuple) -> None:
    kind, name, examples = op
    if kind == "add_class":
        client.add_class("e", name, examples)
    elif kind == "add_examples":
        client.add_examples("e", name, examples)
    else:
        client.remove_class("e", name)


def served_state(client: Client) -> dict[str, list[str]]:
    return {c["name"]: c["examples"] for c in client.classes("e")}


def test_acknowledged_mutations_survive_kill_9(tmp_path, int8_dir):
    encoder = f"onnx:{int8_dir}"
    root = tmp_path / "root"
    rng = random.Random(17)
    model = Model()
    proc, client = start(root, encoder)
    client.create_engine("e")
    acknowledged = 0
    t0 = time.monotonic()
    for kill in range(KILLS):
        killer = threading.Timer(rng.uniform(0.05, 0.8), lambda p=proc: p.send_signal(signal.SIGKILL))
        killer.start()
        in_flight = None
        while True:
            op = model.next_op(rng)
            try:
                send(client, op)
            except (urllib.error.URLError, ConnectionError, OSError):
                in_flight = op
                break
            model.apply(op)
            acknowledged += 1
        killer.join()
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        proc, client = start(root, encoder)
        served = served_state(client)
        if in_flight is not None and model.was_applied(in_flight, served):
            model.apply(in_flight)
        assert served == model.classes, f"after kill {kill + 1}"   # exactly once, nothing half-applied
    assert acknowledged >= KILLS
    answers = client.classify("e", PROBES, top_k=3)
    proc.send_signal(signal.SIGTERM)   # a graceful stop compacts into a normal save
    proc.wait(timeout=60)
    elapsed = time.monotonic() - t0

    replay = FewShotEngine(encoder=encoder)
    for kind, name, examples in model.ops:
        if kind == "add_class":
            replay.add_class(name, examples)
        elif kind == "add_examples":
            replay.add_examples(name, examples)
        else:
            replay.remove_class(name)
    expected = replay.predict(PROBES, top_k=3)
    assert [p.label for p in answers] == [p.label for p in expected]
    for got, want in zip(answers, expected):
        assert [lab for lab, _ in got.top_k] == [lab for lab, _ in want.top_k]
        assert got.score == pytest.approx(want.score, abs=1e-5)
    saved = FewShotEngine.load(root / "e")
    assert saved.raw_examples == model.classes
    assert [p.label for p in saved.predict(PROBES)] == [p.label for p in expected]
    assert not list((root / ".journal").glob("*.jsonl")) or (root / ".journal" / "e.jsonl").read_bytes() == b""
    print(f"{KILLS} kills, {acknowledged} acknowledged mutations, {len(model.ops)} applied, {elapsed:.1f} s")
