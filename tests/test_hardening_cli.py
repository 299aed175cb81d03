"""Hardening of the command line (issue 13): exports, pipes, and answers on unusable audio."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

from engine.runs.store import RunStore
from test_hardening_store import _filled_store

ROOT = Path(__file__).resolve().parent.parent


def _engine(*args: str, cache: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_export_guards_names_that_spreadsheets_would_run(tmp_path):
    cache = tmp_path / "cache"
    ids = list(_filled_store(cache, n=2))
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    store.rename(ids[0], '=HYPERLINK("http://evil.example","x")')
    store.set_tags(ids[1], ["@SUM(A1)"])
    done = _engine("export", cache=cache)
    assert done.returncode == 0, done.stderr
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(done.stdout))}
    assert rows[ids[0]]["name"] == "'" + '=HYPERLINK("http://evil.example","x")'
    assert rows[ids[1]]["tags"] == "'@SUM(A1)"


# ---- 13. small things --------------------------------------------------------------------------


def test_runs_piped_into_head_ends_quietly(tmp_path):
    cache = tmp_path / "cache"
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    from test_store import tiny_config

    for i in range(1500):  # ~100 kB of listing: many writes after `head` has left
        store.create_run(tiny_config(), name=f"run number {i} " + "x" * 40)
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    done = subprocess.run(f"'{sys.executable}' -m engine runs | head -n 1", shell=True, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


def test_progress_for_a_real_folder_does_not_say_demo(make_tiny_dataset, tmp_path):
    root = make_tiny_dataset(per_class=1)
    done = subprocess.run([sys.executable, "-m", "engine", "data", "summary", "--data", str(root)], cwd=ROOT,
                          env={**os.environ, "MEDLEY_CACHE": str(tmp_path / "cache")}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "demo" not in done.stderr and "checking dataset" in done.stderr


def test_upload_limit_is_stated_as_the_widget_states_it():
    import pytest

    from engine.data.audio import MAX_UPLOAD_BYTES, load_audio
    from engine.core.errors import AudioError

    with pytest.raises(AudioError, match=r"is 51 MB; the limit is 50 MB"):
        load_audio(b"\0" * (51 * 2**20), max_bytes=MAX_UPLOAD_BYTES, name="big.wav")


def test_whole_clip_training_from_the_cache_gives_no_numpy_warning(make_tiny_dataset, tmp_path):
    root = make_tiny_dataset(per_class=2)
    args = ["train", "--data", str(root), "--frames", "all", "--arch", "sequence", "--hidden", "8",
            "--epochs", "1", "--batch-size", "8", "--json"]
    for attempt in ("computes the features", "reads them from the cache"):
        done = _engine(*args, cache=tmp_path / "cache")
        assert done.returncode == 0, (attempt, done.stderr[-2000:])
        assert "not writable" not in done.stderr, attempt
