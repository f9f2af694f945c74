#!/usr/bin/env bash
# The torch-free install, checked end to end (CI runs it after the tests; about a minute):
#   1. the main venv (.venv, full install) builds an engine from the shipped Banking77 sample and saves it
#      portable (its encoder an ONNX export), noting its labels and scores for the sample's queries;
#   2. a clean venv gets fewshot with ONE pip command: `pip install -c constraints.txt ./portable`;
#   3. there, `import torch` (and sentence_transformers, transformers) must fail, and the saved engine must load
#      and give the same labels (scores within 1e-4), through the API and through `fewshot classify`.
# Usage: bash scripts/check_portable.sh [--keep]   (--keep leaves the temporary folder for a look)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KEEP=${1:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fewshot-portable.XXXXXX")
if [ "$KEEP" != "--keep" ]; then trap 'rm -rf "$WORK"' EXIT; fi
START=$(date +%s)
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 FEWSHOT_PROGRESS=0

echo "[portable] 1/3 saving a portable engine with the main venv"
.venv/bin/python - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

from fewshot import FewShotEngine
from fewshot.datasets import banking77_sample

work = Path(sys.argv[1])
support, sample_queries = banking77_sample()
engine = FewShotEngine(encoder="minilm")
for label, texts in support.items():
    engine.add_class(label, examples=texts)
queries = [text for text, _ in sample_queries]
torch_labels = [p.label for p in engine.predict(queries)]
engine.save(work / "engine", portable=True)
portable = FewShotEngine.load(work / "engine")
preds = portable.predict(queries)
agree = sum(a == p.label for a, p in zip(torch_labels, preds))
print(f"[portable]     {len(queries)} queries; the portable engine agrees with the torch one on {agree}")
json.dump({"queries": queries, "labels": [p.label for p in preds], "scores": [p.score for p in preds]},
          open(work / "expected.json", "w", encoding="utf-8"))
EOF

echo "[portable] 2/3 clean venv + one pip command: pip install -c constraints.txt ./portable"
BASE_PYTHON=$(.venv/bin/python -c "import sys; print(sys._base_executable)")
"$BASE_PYTHON" -m venv "$WORK/venv"
rm -rf portable/build   # setuptools builds in place and would reuse files of an earlier build
"$WORK/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" "$ROOT/portable"

echo "[portable] 3/3 load and predict where torch is absent"
cd "$WORK"   # not the repository: the installed package must serve, not the source tree
"$WORK/venv/bin/python" - "$WORK" <<'EOF'
import importlib.util, json, sys
from pathlib import Path

work = Path(sys.argv[1])
for name in ("torch", "sentence_transformers", "transformers", "torchvision", "open_clip", "timm"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed in the portable venv"
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("import torch succeeded in the portable venv")

import fewshot
from fewshot import FewShotEngine

assert Path(fewshot.__file__).resolve().is_relative_to((work / "venv").resolve()), fewshot.__file__
expected = json.loads((work / "expected.json").read_text(encoding="utf-8"))
preds = FewShotEngine.load(work / "engine").predict(expected["queries"])
labels = [p.label for p in preds]
assert labels == expected["labels"], [(q, a, b) for q, a, b in zip(expected["queries"], labels, expected["labels"])
                                      if a != b]
worst = max(abs(p.score - s) for p, s in zip(preds, expected["scores"]))
assert worst < 1e-4, f"scores differ by up to {worst}"
assert "torch" not in sys.modules
print(f"[portable]     same {len(labels)} labels, scores within {worst:.1e}; torch not importable")
EOF
OUT=$("$WORK/venv/bin/fewshot" classify --index "$WORK/engine" --json "I still have not received my new card")
"$WORK/venv/bin/python" -c "import json, sys; p = json.loads(sys.argv[1])[0]; assert p['label'], p; \
print(f\"[portable]     fewshot classify: {p['label']} {p['score']:.3f}\")" "$OUT"
echo "[portable] ok in $(( $(date +%s) - START )) s"
