#!/usr/bin/env bash
# Creates .venv (if missing) and installs fusion-bench-fw with its pinned dependencies.
# torch 2.14.1 and torchvision 0.29.1 are pinned as a pair (open_clip_torch needs torchvision, whose
# wheels load only beside their own torch build); pip takes both from this machine kind's disk.
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,bench]'
.venv/bin/python -c "import torch, fusion_bench, fusion_bench_fw; print('fusion-bench-fw ready: torch', torch.__version__)"
