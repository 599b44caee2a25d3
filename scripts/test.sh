#!/usr/bin/env bash
# Set up .venv with the test extras and run the whole test suite (what .ci/run calls).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
scripts/setup.sh test
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q "$@"
