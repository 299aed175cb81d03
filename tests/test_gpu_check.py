"""benchmarks/gpu_check.sh: without CUDA it says so and exits 0; its table code runs on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run in full")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout


def test_it_runs_the_interpreter_it_is_given_not_the_one_on_path(tmp_path) -> None:
    """A `python` first on PATH that is not this interpreter (a venv not activated) is not used."""
    wrong = tmp_path / "python"
    wrong.write_text("#!/bin/sh\necho 'the python on PATH ran'\nexit 3\n")
    wrong.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--help"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "--quick" in out.stdout


def test_its_table_runs_on_cpu_with_tiny_sizes() -> None:
    """Everything but the CUDA tests, on CPU: each row of the table is measured and printed."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick",
                          "--skip-tests"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("features of 4 clips", "study base, 2 epochs", "2 concurrent runs vs 1", "2 seeds grouped vs sequential",
                "study: float32 vs bfloat16", "sequence: float32 vs bfloat16"):
        assert row in out.stdout, out.stdout
