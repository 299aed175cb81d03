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
from test_app_pages import train_page_on

from engine.runs.store import RunStore

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
        at = train_page_on(run_id)
        assert not at.exception, at.exception
        assert not any("Running in another process" in c.value for c in at.caption)
        assert any(b.label.startswith("Resume from epoch") for b in at.button), [b.label for b in at.button]
        assert store.status(run_id) == "interrupted"
    finally:
        st.cache_resource.clear()


# ---- 6. nonsense settings are refused when the configuration is made ---------------------------

BAD_VALUES = [
    ("train.lr", float("inf")), ("train.lr", float("nan")), ("train.batch_size", 2.5), ("model.hidden_size", 2.5),
    ("model.num_layers", "2"), ("train.standardize", "yes"), ("train.epochs", True), ("features.frames", 1.5),
    ("train.momentum", -0.5), ("train.grad_clip", 0.0), ("model.dropout", float("nan")), ("train.eps", 0.0),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_bad_values_are_refused_naming_the_field(name, value):
    from engine.core.config import RunConfig
    from engine.core.errors import ConfigError

    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        RunConfig().with_values(**{name: value})
    section, key = name.split(".")
    with pytest.raises(ConfigError, match=name.split(".")[1]):
        RunConfig.from_dict({section: {key: value}})


def test_whole_floats_from_json_are_accepted_as_ints():
    from engine.core.config import RunConfig

    config = RunConfig.from_json('{"train": {"batch_size": 50.0, "lr": 1}, "model": {"hidden_size": 8.0}}')
    assert config.train.batch_size == 50 and isinstance(config.train.batch_size, int)
    assert isinstance(config.train.lr, float) and config.model.hidden_size == 8
    assert RunConfig.from_json(config.to_json()) == config


def test_cli_refuses_bad_settings_before_training(tmp_path):
    cache = tmp_path / "cache"
    done = _engine("train", "--lr", "inf", "--json", cache=cache)
    assert done.returncode == 2 and "train.lr must be a finite number" in done.stderr, done.stderr
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"train": {"batch_size": 2.5}}))
    done = _engine("train", "--config", str(config), "--json", cache=cache)
    assert done.returncode == 2 and "train.batch_size must be a whole number" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (cache / "runs.sqlite").exists() or not RunStore(cache / "runs.sqlite", cache / "runs").list_runs()


# ---- 7. a run that learns nothing says so ------------------------------------------------------


def test_sgd_with_a_huge_learning_rate_is_flagged_not_silently_finished(tmp_path):
    from engine.learn.train import train_run
    from test_hardening_store import realistic_result
    from test_train import config, make_split

    data = {"training": make_split(160, 0), "validation": make_split(48, 1), "test": make_split(40, 2)}
    bad = train_run(config(optimizer="sgd", lr=1e3, epochs=6), data, device="cpu")
    losses = [h["train_loss"] for h in bad.history]
    assert bad.status == "finished" and bad.warning is not None, losses
    assert bad.warning.startswith("did not learn: training loss rose from") or "no lower than guessing" in bad.warning
    good = train_run(config(epochs=6, standardize=True), data, device="cpu")
    assert good.warning is None

    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    run_id = store.create_run(config())
    result = realistic_result()
    result.warning = bad.warning
    store.save_result(run_id, result)
    assert store.get(run_id).warning == bad.warning
    store.set_status(run_id, "running")  # resumed or restarted: the old verdict no longer holds
    assert store.get(run_id).warning is None


@pytest.mark.parametrize("losses,accuracy,flagged", [
    ([2.09, 5.0, 40.0, 1500.0], 0.125, "rose from 2.09 to 1.5e+03"),
    ([2.09, 2.085, 2.081, 2.08], 0.13, "no lower than guessing"),
    ([2.09, 1.9, 1.5, 1.0], 0.6, None),
    ([2.09, 2.08, 2.07, 2.07], 0.40, None),  # slow, but validation accuracy is well above chance
    ([2.09, 2.5, 1.2, 1.1], 0.7, None),  # one bad epoch, then it learned
    ([2.0], None, None),
])
def test_learning_warning_signs(losses, accuracy, flagged):
    from engine.learn.train import learning_warning

    history = [{"epoch": i + 1, "train_loss": v, "val_accuracy": accuracy} for i, v in enumerate(losses)]
    warning = learning_warning(history)
    assert (warning is None) if flagged is None else (flagged in warning), warning
