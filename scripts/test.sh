#!/usr/bin/env bash
# Set up, install the optional models the tests exercise (checksums verified; idempotent), then run the whole
# test suite (reads real data from ../shared/data when present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for model in mpnet effnet-lite1 effnet-lite2; do
  .venv/bin/fewshot models install "$model" --quiet
done
exec .venv/bin/python -m pytest -q "$@"
