"""Shared, once-per-session ONNX exports for tests/test_export.py and tests/encoders/test_onnx.py, plus a
runner for subprocesses in which torch (and the libraries built on it) cannot be imported."""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_ROOT = Path(tempfile.mkdtemp(prefix="fewshot-onnx-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)

#: modules a torch-free process must never import
BLOCKED = ("torch", "torchvision", "transformers", "sentence_transformers", "open_clip", "timm")

BLOCKER = f"""
import sys, importlib.abc
BLOCKED = {BLOCKED!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked in this test: ' + name)
        return None
sys.meta_path.insert(0, _Block())
"""


@functools.cache
def exported(encoder: str, quantize: str | None = None) -> Path:
    """Export ``encoder`` once per test session; returns the export folder."""
    from fewshot.export.onnx_export import export_encoder

    safe = encoder.replace(":", "_").replace("/", "_")
    return export_encoder(encoder, _ROOT / f"{safe}-{quantize or 'fp32'}", quantize=quantize)


def scratch_dir(name: str) -> Path:
    path = _ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_torch_free(code: str, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh Python with torch & co. blocked; the code must print one JSON line last.
    Also asserts none of the blocked modules got imported."""
    script = BLOCKER + code + f"""
_bad = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})
assert not _bad, _bad
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(REPO))
    assert proc.returncode == 0, f"torch-free subprocess failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
