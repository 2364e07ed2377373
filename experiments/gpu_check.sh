#!/usr/bin/env bash
# GPU check (issue 14): step times, FLOPs/MFU, largest batch, ni-infill throughput and DDP on
# the GPU(s) of this machine, printed as Markdown for BENCHMARKS.md. <= 8 minutes, no downloads.
#
#   experiments/gpu_check.sh                      # on a GPU machine (H100/H200 class)
#   experiments/gpu_check.sh --json gpu.json      # also keep the raw numbers
#   experiments/gpu_check.sh --dry-run            # CPU, tiny sizes: checks every code path
#
# Options are those of experiments/gpu_check.py (--help). The Python side keeps its own time
# budget (--budget-s, 420 s); the timeout below is the hard stop: SIGINT first, so the tables
# gathered so far are still printed, then SIGKILL 20 s later.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE="${WANDB_MODE:-offline}"
exec timeout --signal=INT --kill-after=20 480 "$py" experiments/gpu_check.py "$@"
