#!/usr/bin/env bash
# The main job on the embedded default. Until the service lands this samples the synthetic
# world and checks the shipped oracle on it; the command stays the same when the service lands.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
scripts/setup.sh
.venv/bin/tta world sample --n 8 --out out/world-sample
.venv/bin/tta eval oracle --n 200 --negatives 120 --out out/oracle-eval
