"""Hardening of the run store (issue 13, case 2): a corrupt, garbled or emptied database gives
one clear message (engine, CLI, every page), is kept aside, and is rebuilt from the run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.errors import StoreDamaged
from engine.runs.store import RunStore, rebuild_store
from engine.learn.metrics import evaluate
from test_store import fake_result, tiny_config

ROOT = Path(__file__).resolve().parent.parent


def realistic_result():
    """fake_result with full metrics and predictions for validation and test (as train_run gives)."""
    import numpy as np

    result = fake_result()
    rng = np.random.default_rng(0)
    y = np.arange(16) % 8
    probs = rng.dirichlet(np.ones(8), size=16).astype(np.float32)
    result.metrics = {split: evaluate(y, probs) for split in ("validation", "test")}
    result.metrics["validation"]["accuracy"] = 0.5  # a value the tests recognise
    result.predictions = {split: {"ids": [f"c{i}" for i in range(16)], "y": y, "probs": probs}
                          for split in ("validation", "test")}
    return result


def _filled_store(cache: Path, n: int = 3) -> dict[str, str]:
    """A store under cache/ with n finished runs (and enough rows to span many pages); ids -> names."""
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    names = {}
    for i in range(n):
        run_id = store.create_run(tiny_config(**{"train.seed": i}), name=f"run {i}", tags=["t"])
        store.set_status(run_id, "running")
        store.save_result(run_id, realistic_result())
        names[run_id] = f"run {i}"
    for i in range(200):  # padding rows so that the file has pages in the middle
        store.create_run(tiny_config(), name="x" * 300)
    store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return names


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "header":
        data[:100] = b"\xff" * 100
    elif how == "middle":
        mid = len(data) // 2
        data[mid:mid + 16384] = os.urandom(16384)
    elif how == "truncate":
        data = bytearray()
    path.write_bytes(bytes(data))


def _engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("how", ["header", "middle", "truncate"])
def test_damaged_store_is_reported_then_rebuilt_from_run_folders(tmp_path, how):
    cache = tmp_path / "cache"
    names = _filled_store(cache)
    db = cache / "runs.sqlite"
    _damage(db, how)
    damaged_bytes = db.read_bytes()
    with pytest.raises(StoreDamaged, match="--rebuild"):
        RunStore(db, cache / "runs")
    assert db.read_bytes() == damaged_bytes  # opening never writes over the damaged file

    report = rebuild_store(db, cache / "runs")
    assert sorted(report.recovered) == sorted(names)
    assert report.moved_to is not None and report.moved_to.read_bytes() == damaged_bytes
    store = RunStore(db, cache / "runs")
    runs = {r.id: r for r in store.list_runs()}
    assert set(runs) == set(names)
    for run_id, name in names.items():
        record = runs[run_id]
        assert record.name == name and record.tags == ["t"] and record.status == "finished"
        assert record.metrics["validation"]["accuracy"] == 0.5 and len(record.history) == 2
        assert store.load_state_dict(run_id)  # the weights are usable again


def test_rebuild_recomputes_metrics_for_folders_saved_without_a_run_section(tmp_path):
    cache = tmp_path / "cache"
    names = _filled_store(cache, n=1)
    [run_id] = names
    meta_path = cache / "runs" / run_id / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("run")  # as saved by earlier versions
    meta_path.write_text(json.dumps(meta))
    report = rebuild_store(cache / "runs.sqlite", cache / "runs")
    assert report.recovered == [run_id]
    record = RunStore(cache / "runs.sqlite", cache / "runs").get(run_id)
    assert record.status == "finished" and record.metrics["test"]["n"] == 16


@pytest.mark.parametrize("how", ["header", "middle", "truncate"])
def test_cli_says_how_to_rebuild_and_rebuilds(tmp_path, how):
    cache = tmp_path / "cache"
    names = _filled_store(cache)
    _damage(cache / "runs.sqlite", how)
    done = _engine("runs", "--json", cache=cache)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "--rebuild" in done.stderr, done.stderr
    done = _engine("runs", "--rebuild", "--json", cache=cache)
    assert done.returncode == 0, done.stderr
    assert {r["run_id"] for r in json.loads(done.stdout)} == set(names)
    assert "kept as" in done.stderr
    assert list(cache.glob("runs.sqlite.damaged-*"))


def test_busy_or_unreadable_is_not_called_damaged(tmp_path):
    cache = tmp_path / "cache"
    _filled_store(cache, n=1)
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    store.check()  # a healthy file passes
    assert len(store.list_runs()) == 201


# ---- 5. a killed run is seen as interrupted within seconds ------------------------------------


def test_stale_heartbeat_marks_a_live_owner_interrupted(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    fresh = store.create_run(tiny_config())
    stale = store.create_run(tiny_config())
    store.set_status(stale, "running")
    store._conn().execute("UPDATE runs SET heartbeat=heartbeat-600 WHERE id=?", (stale,))
    assert store.mark_interrupted() == [stale]  # this process is alive, but the run gave no sign of life
    assert store.get(fresh).status == "queued"
    assert "no sign of life" in store.get(stale).error


def test_store_made_before_heartbeats_is_migrated(tmp_path):
    import sqlite3

    from engine.runs import store as store_module

    con = sqlite3.connect(tmp_path / "runs.sqlite")
    con.executescript(store_module._SCHEMA.replace("best_epoch INTEGER,\n    heartbeat REAL", "best_epoch INTEGER"))
    con.close()
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    run_id = store.create_run(tiny_config())
    assert store.mark_interrupted() == [] and store.status(run_id) == "queued"
