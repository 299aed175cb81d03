"""Hardening of data and cache (issue 13, cases 8-10): NaN clips are found and skipped; the
feature cache is verified and never crashes a run; an unwritable cache says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def _engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _poison(root: Path, subset: str = "training", value: float = np.nan) -> str:
    """Put one non-finite sample into the first clip of `subset`; returns its file name."""
    path = sorted((root / "audio").glob(f"Medley-solos-DB_{subset}-*.wav"))[0]
    y, sr = sf.read(path, dtype="float32")
    y[1000] = value
    sf.write(path, y, sr, subtype="FLOAT")
    return path.name


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_clip_is_a_problem_and_skipped(make_tiny_dataset, medley_cache, value):
    from engine.dataset import load_dataset

    root = make_tiny_dataset(per_class=2)
    name = _poison(root, value=value)
    ds = load_dataset(root)
    assert [p.file for p in ds.problems] == [name] and "NaN or infinite" in ds.problems[0].reason
    assert name not in {c.path.name for c in ds.clips} and len(ds.clips) == 47
    again = load_dataset(root)  # from the memo: same answer, no second full read
    assert [p.file for p in again.problems] == [name] and again.fingerprint() == ds.fingerprint()


def test_training_runs_past_a_nan_clip_and_summary_lists_it(make_tiny_dataset, tmp_path):
    root = make_tiny_dataset(per_class=2)
    name = _poison(root)
    cache = tmp_path / "cache"
    done = _engine("data", "summary", "--data", str(root), "--json", cache=cache)
    assert done.returncode == 0, done.stderr
    assert {p["file"] for p in json.loads(done.stdout)["problems"]} == {name}
    done = _engine("train", "--data", str(root), "--hidden", "8", "--epochs", "1", "--batch-size", "8", "--json",
                   cache=cache)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"
