"""The one progress-bar policy (fewshot._progress): silent under 2 s, a bar on long work, forced by argument or
FEWSHOT_PROGRESS; no third-party bars ("Loading weights", "Batches") on the paths fewshot drives."""
from __future__ import annotations

import io

import pytest
import tqdm.std

from fewshot._progress import DELAY_SECONDS, bar_options, progress, quiet_loading
from fewshot.errors import InvalidInputError


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("FEWSHOT_PROGRESS", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


class FakeClock:
    """tqdm's clock (``tqdm.std.time``), advanced by hand: seconds of "work" without waiting for them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(tqdm.std, "time", fake)
    return fake


def run(n: int, seconds_each: float, clock: FakeClock | None = None, **kwargs) -> str:
    """Iterate a policy bar over ``n`` steps of ``seconds_each``. ``disable=False`` is passed on to tqdm only where
    the policy leaves ``disable`` open (the delay mode), so a TQDM_DISABLE=1 in the test run's own environment
    (tqdm reads it at import; tested in a new process below) does not hide what is tested here."""
    out = io.StringIO()
    for _ in progress(range(n), file=out, desc="work", mininterval=0, **{"disable": False, **kwargs}):
        if clock is not None:
            clock.now += seconds_each
    return out.getvalue()


def test_options_follow_argument_then_environment_then_delay(monkeypatch):
    assert bar_options(None) == {"delay": DELAY_SECONDS}
    assert bar_options(True) == {"disable": False, "delay": 0.0}
    assert bar_options(False) == {"disable": True}
    monkeypatch.setenv("FEWSHOT_PROGRESS", "1")
    assert bar_options(None) == {"disable": False, "delay": 0.0}
    assert bar_options(False) == {"disable": True}            # the argument beats the environment
    monkeypatch.setenv("FEWSHOT_PROGRESS", "off")
    assert bar_options(None) == {"disable": True}
    assert bar_options(True) == {"disable": False, "delay": 0.0}
    monkeypatch.setenv("FEWSHOT_PROGRESS", "sometimes")
    with pytest.raises(InvalidInputError, match="FEWSHOT_PROGRESS"):
        bar_options(None)


def test_a_short_call_prints_nothing(clock):
    assert run(50, 0.01, clock) == ""                          # 0.5 s of work in all


def test_a_long_call_shows_its_bar_after_the_delay(clock):
    text = run(40, 0.5, clock)                                 # 20 s of work
    assert "work" in text and "40/40" in text


def test_forcing_on_shows_a_bar_at_once_and_off_never(clock, monkeypatch):
    assert "work" in run(3, 0.0, clock, show=True)
    assert run(40, 0.5, clock, show=False) == ""
    monkeypatch.setenv("FEWSHOT_PROGRESS", "1")
    assert "work" in run(3, 0.0, clock)
    monkeypatch.setenv("FEWSHOT_PROGRESS", "0")
    assert run(40, 0.5, clock) == ""


LONG_WORK = """
import io, sys, tqdm.std
from fewshot._progress import progress
now = [0.0]
tqdm.std.time = lambda: now[0]
out = io.StringIO()
for _ in progress(range(40), file=out, desc="work", mininterval=0):
    now[0] += 0.5
print(repr(out.getvalue()))
"""


@pytest.mark.parametrize("env, shown", [({}, True), ({"TQDM_DISABLE": "1"}, False)])
def test_tqdm_disable_still_silences_the_default(env, shown):
    """tqdm reads TQDM_* when it is imported: checked in a new process."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TQDM_", "FEWSHOT_PROGRESS"))}
    proc = subprocess.run([sys.executable, "-c", LONG_WORK], capture_output=True, text=True, check=True,
                          env={**clean, **env})
    assert ("40/40" in proc.stdout) is shown, proc.stdout


def test_a_manual_bar_updated_rarely_appears_once_the_delay_passed(clock):
    out = io.StringIO()
    bar = progress(total=3, desc="epochs", file=out, mininterval=0, disable=False)
    clock.now += DELAY_SECONDS / 2
    bar.update(0)
    assert out.getvalue() == ""
    clock.now += DELAY_SECONDS
    bar.update(0)                                              # as the fine-tune does after every step
    assert "epochs" in out.getvalue()
    bar.close()


def test_quiet_loading_routes_transformers_bars_and_restores_the_hook(clock):
    from transformers.utils import logging as hf_logging

    previous = hf_logging.set_tqdm_hook(None)
    try:
        sentinel = lambda factory, args, kwargs: factory(*args, **kwargs)  # noqa: E731
        hf_logging.set_tqdm_hook(sentinel)
        with quiet_loading():
            out = io.StringIO()
            for _ in hf_logging.tqdm(range(100), desc="Loading weights", file=out, mininterval=0):
                clock.now += 0.001                             # a 0.1 s load: no bar
            assert out.getvalue() == ""
        assert hf_logging.set_tqdm_hook(previous) is sentinel  # restored
    finally:
        hf_logging.set_tqdm_hook(previous)


def test_no_bars_from_engine_construction_or_short_encodes(capfd):
    from fewshot import FewShotEngine
    from fewshot.encoders.sentence import SentenceTransformerEncoder, minilm_path

    encoder = SentenceTransformerEncoder(minilm_path(), name="minilm-progress-test", device="cpu")  # not cached
    engine = FewShotEngine(encoder=encoder)
    engine.add_class("card", examples=["I lost my card", "my card is gone"])
    engine.add_class("rate", examples=["what is the exchange rate", "euro to dollar"])
    engine.predict([f"where is my card number {i}" for i in range(12)])
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Batches" not in err and "it/s" not in err, err[-2000:]


def test_sentence_transformers_path_shows_only_fewshot_bars(capfd):
    from fewshot.encoders.sentence import SentenceTransformerEncoder, load_sentence_transformer, minilm_path

    model = load_sentence_transformer(minilm_path(), "cpu")
    assert "Loading weights" not in capfd.readouterr().err
    encoder = SentenceTransformerEncoder.from_model(model, name="st-progress-test")
    encoder.encode_text([f"sentence {i}" for i in range(10)])
    assert capfd.readouterr().err == ""
    encoder.encode_text([f"sentence {i}" for i in range(10)], show_progress_bar=True)
    err = capfd.readouterr().err
    assert "encoding texts" in err and "Batches" not in err


def test_onnx_encoder_follows_the_policy(capfd):
    """The ONNX runtime path has its own loop over runs: silent for short calls, a bar when forced."""
    from fewshot.encoders import load_encoder
    from tests.onnx_exports import exported

    encoder = load_encoder(f"onnx:{exported('minilm')}", cache=False)
    capfd.readouterr()
    encoder.encode_text([f"sentence {i}" for i in range(10)])
    assert capfd.readouterr().err == ""
    encoder.encode_text([f"sentence {i}" for i in range(10)], show_progress_bar=True)
    err = capfd.readouterr().err
    assert "encode (onnx)" in err and "texts" in err


def test_linear_probe_fit_has_a_policy_bar(capfd, monkeypatch):
    """The cross-validated linear probe (16 s on CLINC150 10-shot at load) counts its fits under the policy."""
    import numpy as np

    from fewshot.classifiers import ArraySupport, make_classifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    support = ArraySupport(x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(4), 10), 4)
    make_classifier("linear").fit(support)
    assert capfd.readouterr().err == ""             # a short fit: silent
    monkeypatch.setenv("FEWSHOT_PROGRESS", "1")
    make_classifier("linear").fit(support)
    assert "linear probe (fits)" in capfd.readouterr().err


def test_onnx_export_counts_its_stages_under_the_policy(capfd, tmp_path):
    """An export (a portable save: ~10 s for MiniLM, benchmarks/progress_bars.py) is a bar over its stages: model
    ready, graph traced, graph checked / quantised, manifest; silent when forced off."""
    from fewshot.export.onnx_export import export_encoder

    export_encoder("minilm", tmp_path / "off", show_progress_bar=False)
    assert "export to ONNX" not in capfd.readouterr().err
    export_encoder("minilm", tmp_path / "on", quantize="int8", show_progress_bar=True)
    err = capfd.readouterr().err
    assert "export to ONNX (stages)" in err and "/4 [" in err and "text graph checked, int8" in err, err[-2000:]
