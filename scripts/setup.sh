#!/usr/bin/env bash
# Creates .venv (if missing) and installs fusion-bench-fw with its pinned dependencies.
# torch is pinned to 2.13.0, the CPU build pip finds on this machine's disk; an unpinned torch
# would download a multi-GB CUDA build. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,bench]'
.venv/bin/python -c "import torch, fusion_bench, fusion_bench_fw; print('fusion-bench-fw ready: torch', torch.__version__)"
