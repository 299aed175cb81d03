#!/usr/bin/env bash
# One command proves the GPU path: the CUDA tests, then one table of GPU figures (benchmarks/gpu.py).
# Installs and downloads nothing. Without a CUDA device it says so and exits 0.
# The interpreter: $PYTHON when set (tests pass their own, sys.executable), else `python` on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu.py "$@"
