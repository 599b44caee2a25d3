#!/usr/bin/env bash
# Create .venv and install the project: torch first (the local CPU wheel here, CUDA on a GPU
# host), then the project pinned by constraints.txt. Never torchvision, never plain onnxruntime.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
if [ -n "$extras" ]; then target=".[${extras}]"; else target="."; fi
.venv/bin/python -m pip install --quiet -c constraints.txt -e "$target"
if .venv/bin/python -m pip show --quiet torchvision >/dev/null 2>&1; then
  echo "error: torchvision got installed; it breaks transformers on this host" >&2; exit 1
fi
if .venv/bin/python -m pip show --quiet onnxruntime >/dev/null 2>&1; then
  echo "error: plain onnxruntime got installed next to onnxruntime-gpu" >&2; exit 1
fi
