#!/usr/bin/env bash
# The prepared GPU check: runs with the machine's own python3 (no venv, no network), the
# repository on PYTHONPATH; writes results/gpu/report-cuda.json (and $OUT/ when set).
#   scripts/gpu_check.sh                     # on a GPU box: full form, about 8 minutes on one H100
#   scripts/gpu_check.sh --device cpu --tiny # seconds-long CPU form (the test suite runs it)
# Missing optional packages are named at the start; librosa can be brought as wheels (docs/gpu-and-real-data.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m bianet_lib.engine.gpu_check "$@"
