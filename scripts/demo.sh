#!/usr/bin/env bash
# The main job: set up, then run `fewshot demo` on the offline default encoder (no network, no ../shared data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/fewshot demo "$@"
