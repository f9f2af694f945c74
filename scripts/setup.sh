#!/usr/bin/env bash
# Create .venv (if missing) and install fewshot with every extra, pinned by constraints.txt.
# Idempotent: a second run with unchanged pyproject.toml/constraints.txt returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.fewshot-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import fewshot" 2>/dev/null; then
  echo "[setup] .venv is up to date"
  exit 0
fi
echo "[setup] installing fewshot and its pinned dependencies (torch 2.14.1 / torchvision 0.29.1) ..."
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[onnx,bench,dev,serve,ray]"
echo "$want" > "$stamp"
echo "[setup] done"
