"""Cold start: importing fewshot (the library or its CLI) loads none of the heavy libraries; they come in only
with the work that needs them (benchmarks/cold_start.py measures the times)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "transformers", "sentence_transformers", "sklearn", "pandas", "PIL", "onnxruntime",
         "open_clip", "timm", "tqdm", "matplotlib", "fastapi")


def imported_after(code: str) -> list[str]:
    script = code + f"\nimport json, sys; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(REPO),
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_library_and_the_cli_loads_nothing_heavy():
    assert imported_after("import fewshot, fewshot.cli; fewshot.cli.build_parser()") == []


def test_an_engine_on_precomputed_vectors_needs_no_model_library():
    code = ("import numpy as np; from fewshot import FewShotEngine; from tests.fakes import FakeTextEncoder; "
            "e = FewShotEngine(encoder=FakeTextEncoder()); e.add_class('a', examples=['x', 'y']); "
            "e.add_class('b', examples=['z', 'w']); e.predict(['x'])")
    assert not {"torch", "transformers", "sentence_transformers", "onnxruntime"} & set(imported_after(code))
