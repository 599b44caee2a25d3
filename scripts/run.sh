#!/usr/bin/env bash
# The main job on the embedded default: set up .venv and serve the REST API on 127.0.0.1:8000
# (OpenAPI at /docs). Ctrl-C stops it. Extra arguments go to `tta serve` (e.g. --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
scripts/setup.sh
exec .venv/bin/tta serve "$@"
