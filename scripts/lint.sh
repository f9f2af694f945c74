#!/usr/bin/env bash
# Static checks CI runs beside the tests: ruff (lint + import order) and mypy on the package.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check fewshot
.venv/bin/ruff check tests benchmarks --select F,E9   # tests and scripts: real errors only (unused, undefined, syntax)
.venv/bin/mypy
echo "[lint] ruff and mypy clean"
