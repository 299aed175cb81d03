#!/usr/bin/env bash
# One command proves the GPU path: the CUDA tests, then one table of GPU figures (benchmarks/gpu.py).
# Installs and downloads nothing. Without a CUDA device it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu.py "$@"
