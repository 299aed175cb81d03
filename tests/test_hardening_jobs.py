"""Hardening of runs and jobs (issue 13, cases 5-7): a killed run becomes interrupted within
seconds; nonsense settings are refused when the configuration is made; a run that learns
nothing says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


def _env(cache: Path, data: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return env | ({"MEDLEY_DATA": str(data)} if data else {})


def _engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=_env(cache), capture_output=True,
                          text=True, timeout=300)


def test_killed_cli_run_is_interrupted_within_seconds_everywhere_with_resume(make_tiny_dataset, tmp_path, monkeypatch):
    data = make_tiny_dataset(per_class=2)
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "train", "--data", str(data), "--epochs", "2000", "--hidden", "8",
         "--batch-size", "8", "--name", "to be killed"],
        cwd=ROOT, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, "the training process ended by itself"
            assert time.monotonic() < deadline, "training did not reach epoch 2 in time"
            if (cache / "runs.sqlite").exists():
                runs = RunStore(cache / "runs.sqlite", cache / "runs").list_runs()
                if runs and runs[0].status == "running" and runs[0].epochs_done >= 2:
                    break
            time.sleep(0.5)
        run_id = runs[0].id
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: no handler runs, nothing is recorded
        proc.wait(timeout=30)
    killed = time.monotonic()

    done = _engine("runs", "--json", cache=cache)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["status"] == "interrupted" and "stopped" in row["error"]
    assert time.monotonic() - killed < 30  # one CLI call (on a shared, slow machine)

    # the dashboard: no "running in another process" forever, and a Resume button
    monkeypatch.setenv("MEDLEY_CACHE", str(cache))
    monkeypatch.setenv("MEDLEY_DATA", str(data))
    monkeypatch.chdir(ROOT)
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    store._conn().execute("UPDATE runs SET status='running', error=NULL, finished=NULL WHERE id=?", (run_id,))
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/2_Train.py")
        at.session_state["run"] = run_id
        at.run()
        assert not at.exception, at.exception
        assert not any("Running in another process" in c.value for c in at.caption)
        assert any(b.label.startswith("Resume from epoch") for b in at.button), [b.label for b in at.button]
        assert store.status(run_id) == "interrupted"
    finally:
        st.cache_resource.clear()
