"""The engine under random sequences of calls (hypothesis ``RuleBasedStateMachine``), against a small model of what
it should hold.

Calls: add_class, add_examples, remove_class, set_description, set_classifier, refine("linear"), adapt /
undo_adapt, configure_openset, save, load (in this process, and now and then in a fresh one), predict with and
without reject. Invariants after every step: classes and example counts equal the model's; a call that raises
raises a ``FewShotError`` and leaves the engine's state and scores unchanged; a call the model says must fail
(duplicate or unknown class, a class left with neither examples nor a description, no class at all) does fail;
after every load, predictions (labels and scores, with and without reject) equal those taken at the save.

CI runs ``STATE_MACHINE_SEQUENCES`` sequences (env, default 200); ``FEWSHOT_STATE_MACHINE_SEQUENCES=2000`` (or
``benchmarks/state_machine.py``) runs the longer check.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fewshot import FewShotEngine
from fewshot.errors import DuplicateClassError, EmptyClassError, FewShotError, NotFittedError, UnknownClassError
from tests.fakes import TOPICS, TopicTextEncoder, engine_state

ROOT = Path(__file__).resolve().parents[2]
SEQUENCES = int(os.environ.get("FEWSHOT_STATE_MACHINE_SEQUENCES", "200"))
FRESH_PROCESS_LOADS = 3          # per test run: each starts a Python process that imports fewshot (seconds)
NAMES = [f"{t}_intent" for t in TOPICS[:5]]
PROBE = [f"{w} about {t}" for t in TOPICS for w in ("something", "a question", "more")] + \
    ["nothing in particular", "a recipe for cake", "the weather tomorrow", "hello there"]
CLASSIFIERS = ["prototype", "simpleshot", "knn", "fusion", "logreg"]

texts = st.lists(st.sampled_from([f"{t} {w}" for t in TOPICS for w in ("one", "two", "three", "four")]),
                 min_size=1, max_size=8)
descriptions = st.sampled_from([f"about {t}" for t in TOPICS] + ["anything"])


def predictions(eng: FewShotEngine) -> list[tuple]:
    """(label, score) of every probe text, without and with reject (NotFittedError for an engine without classes)."""
    out = []
    for reject in (False, True):
        out += [(p.label, p.score) for p in eng.predict(PROBE, reject=reject)]
    return out


def same_predictions(a: list[tuple], b: list[tuple]) -> bool:
    return [x[0] for x in a] == [y[0] for y in b] and np.allclose([x[1] for x in a], [y[1] for y in b], atol=1e-6)


_fresh_loads = {"left": FRESH_PROCESS_LOADS}


class EngineMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.eng = FewShotEngine(encoder=TopicTextEncoder())
        self.model: dict[str, dict] = {}          # name -> {"examples": int, "description": str | None}
        self.classifier = "prototype"
        self.adapted: str | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="fewshot-sm-")
        self.saved: tuple[Path, list[tuple] | None, dict, str, str | None] | None = None  # + method, adaptation
        self.saves = 0

    def teardown(self) -> None:
        if hasattr(self, "tmp"):
            self.tmp.cleanup()

    # ------------------------------------------------------------------ helpers
    def _can_predict(self) -> bool:
        """Whether the engine has something to predict with: logreg learns from examples only; an adaptation needs
        what it was fitted with to refit after changes (CORAL: two support vectors)."""
        examples = sum(h["examples"] for h in self.model.values())
        vectors = examples + sum(h["description"] is not None for h in self.model.values())
        if self.classifier in ("logreg", "linear") and not examples:
            return False
        return bool(self.model) and not (self.adapted == "coral" and vectors < 2)

    def _state(self) -> tuple | None:
        return engine_state(self.eng, self.eng.embed(PROBE)) if self._can_predict() else None

    def _attempt(self, call, must_fail: type[Exception] | None) -> bool:
        """Run ``call``; True if it succeeded. A failure must be a FewShotError that changed nothing; a call the
        model says must fail must raise ``must_fail``."""
        before = self._state()
        try:
            call()
        except FewShotError as exc:
            assert self._state() == before, f"a failed call ({type(exc).__name__}: {exc}) changed the engine"
            if must_fail is not None:
                assert isinstance(exc, must_fail), f"expected {must_fail.__name__}, got {type(exc).__name__}"
            return False
        assert must_fail is None, f"the call should have raised {must_fail.__name__}"
        return True

    # ------------------------------------------------------------------ rules
    @rule(name=st.sampled_from(NAMES), examples=st.none() | texts, description=st.none() | descriptions)
    def add_class(self, name, examples, description) -> None:
        must_fail = DuplicateClassError if name in self.model else \
            EmptyClassError if not examples and description is None else None
        if self._attempt(lambda: self.eng.add_class(name, examples=examples, description=description), must_fail):
            self.model[name] = {"examples": len(examples or []), "description": description}

    @rule(name=st.sampled_from(NAMES), examples=texts)
    def add_examples(self, name, examples) -> None:
        must_fail = None if name in self.model else UnknownClassError
        if self._attempt(lambda: self.eng.add_examples(name, examples), must_fail):
            self.model[name]["examples"] += len(examples)

    @rule(name=st.sampled_from(NAMES))
    def remove_class(self, name) -> None:
        must_fail = None if name in self.model else UnknownClassError
        if self._attempt(lambda: self.eng.remove_class(name), must_fail):
            del self.model[name]

    @rule(name=st.sampled_from(NAMES), description=st.none() | descriptions)
    def set_description(self, name, description) -> None:
        must_fail = UnknownClassError if name not in self.model else \
            EmptyClassError if description is None and not self.model[name]["examples"] else None
        if self._attempt(lambda: self.eng.set_description(name, description), must_fail):
            self.model[name]["description"] = description

    @rule(classifier=st.sampled_from(CLASSIFIERS))
    def set_classifier(self, classifier) -> None:
        assert self._attempt(lambda: self.eng.set_classifier(classifier), None)
        self.classifier = classifier

    @precondition(lambda self: len(self.model) >= 2)
    @rule()
    def refine_linear(self) -> None:
        if self._attempt(lambda: self.eng.refine("linear", epochs=20), None):
            self.classifier = "linear"

    @rule(unlabeled=st.lists(st.sampled_from(PROBE), min_size=3, max_size=6),
          method=st.sampled_from(["recenter", "coral"]))
    def adapt(self, unlabeled, method) -> None:
        if self._attempt(lambda: self.eng.adapt(unlabeled, method=method), None if self.model else NotFittedError):
            self.adapted = method

    @rule()
    def undo_adapt(self) -> None:
        assert self._attempt(self.eng.undo_adapt, None)
        self.adapted = None

    @rule(keep=st.floats(0.8, 0.99), how=st.sampled_from(["coverage", "accuracy", "drop"]))
    def configure_openset(self, keep, how) -> None:
        assert self._attempt(lambda: self.eng.configure_openset(keep=keep, target=how), None)

    @rule(reject=st.booleans())
    def predict(self, reject) -> None:
        if not self._can_predict():
            with pytest.raises(NotFittedError):
                self.eng.predict(PROBE, reject=reject)
            return
        preds = self.eng.predict(PROBE, reject=reject)
        assert all(p.label is None or p.label in self.model for p in preds)
        assert reject or all(p.label is not None for p in preds)

    @rule()
    def save(self) -> None:
        self.saves += 1
        directory = Path(self.tmp.name) / ("engine" if self.saves % 2 else "other")   # re-saves over old ones too
        self.eng.save(directory)
        self.saved = (directory, predictions(self.eng) if self._can_predict() else None,
                      {name: dict(held) for name, held in self.model.items()}, self.classifier, self.adapted)

    @precondition(lambda self: self.saved is not None)
    @rule()
    def load(self) -> None:
        assert self.saved is not None
        directory, expected, model, self.classifier, self.adapted = self.saved
        self.eng = FewShotEngine.load(directory, encoder=TopicTextEncoder())
        self.model = {name: dict(held) for name, held in model.items()}
        if expected is not None:
            assert same_predictions(predictions(self.eng), expected), "predictions changed across save / load"

    # the budget of subprocesses is spent inside the rule, not in its precondition: a precondition must depend on the
    # machine's state only, or hypothesis's replay of a sequence (to shrink it) draws differently and fails as flaky
    @precondition(lambda self: self.saved is not None and self.saved[1] is not None)
    @rule()
    def load_in_a_fresh_process(self) -> None:
        assert self.saved is not None and self.saved[1] is not None
        if _fresh_loads["left"] <= 0:
            return
        _fresh_loads["left"] -= 1
        directory, expected, *_ = self.saved
        script = ("import json, sys; from fewshot import FewShotEngine; from tests.fakes import TopicTextEncoder; "
                  "from tests.engine.test_state_machine import predictions; "
                  f"e = FewShotEngine.load({str(directory)!r}, encoder=TopicTextEncoder()); "
                  "print(json.dumps(predictions(e)))")
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        got = [tuple(p) for p in json.loads(out.stdout.strip().splitlines()[-1])]
        assert same_predictions(got, expected), "predictions changed in a fresh process"

    # ------------------------------------------------------------------ invariants
    @invariant()
    def classes_and_counts_match_the_model(self) -> None:
        if not hasattr(self, "eng"):
            return
        assert sorted(self.eng.classes) == sorted(self.model)
        counts = dict(zip(self.eng.index.classes, self.eng.index.example_counts()))
        for name, held in self.model.items():
            assert counts[name] == held["examples"], name
            assert len(self.eng.raw_examples.get(name, [])) == held["examples"], name
            assert self.eng.index.entry(name).description == held["description"], name


EngineMachine.TestCase.settings = settings(max_examples=SEQUENCES, stateful_step_count=12, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.filter_too_much])
test_engine_state_machine = EngineMachine.TestCase
