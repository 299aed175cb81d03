"""Issue #30, one truth for progress: preparing a run's data is one bar (an overall fraction
that never goes back, and a time left) across all its stages; a run's training time excludes
that preparation, which is recorded apart (store, CLI `show`), and runs stored before it was
recorded still read."""

from __future__ import annotations

import collections
import re
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_jobs import synthetic_data, tiny_config  # noqa: E402

from engine.runs import worker  # noqa: E402
from engine.runs.eta import prep_words, time_spent  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.progress import PrepProgress, Progress  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402
from ui.live import progress_line  # noqa: E402


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_fraction_across_stages_never_goes_back_and_ends_full() -> None:
    clock = Clock()
    seen: list[float] = []
    prep = PrepProgress(lambda p: seen.append(p.fraction), clock=clock)
    prep.plan({"a": 1.0, "b": 3.0, "c": 6.0})
    for stage, total in (("a", 10), ("b", 5), ("c", 20)):
        prep.begin(stage)
        for sub_step in range(2):  # each stage's own counter restarts at 0 (as the loaders' do)
            for done in range(total + 1):
                clock.now += 0.1
                prep(done, total, f"{stage} {sub_step}: {done}/{total}")
    assert seen == sorted(seen), "the bar went back"
    assert seen[-1] == 1.0 and prep.eta == 0.0
    prep.begin("c")  # a stage announced again (a loader's retry) does not move it back either
    assert prep.fraction == 1.0


def test_the_fraction_weighs_stages_and_the_time_left_spans_them() -> None:
    clock = Clock()
    prep = PrepProgress(clock=clock)
    prep.plan({"a": 1.0, "b": 3.0})
    prep.begin("a")
    clock.now = 10.0
    prep(10, 10, "a done")
    assert prep.fraction == pytest.approx(0.25)  # stage a is a quarter of the weight
    assert prep.eta == pytest.approx(30.0)  # 10 s for a quarter: 30 s for the other three quarters
    prep.begin("b")
    assert prep.stage_words == "2 of 2: b"
    clock.now = 25.0
    prep(1, 2, "b half")
    assert prep.fraction == pytest.approx(0.625)
    assert prep.eta == pytest.approx(25.0 * 0.375 / 0.625)


def test_no_time_left_is_guessed_before_anything_was_measured() -> None:
    clock = Clock()
    prep = PrepProgress(clock=clock)
    prep(1, 100, "x")
    assert prep.eta is None  # 1% done at once: no basis for a guess
    clock.now = 5.0
    prep(50, 100, "x")
    assert prep.eta == pytest.approx(5.0)


def test_a_refined_plan_never_moves_the_bar_back() -> None:
    prep = PrepProgress(clock=Clock())
    prep.plan({"reading": 10.0, "features": 10.0})
    prep.begin("reading")
    prep(1, 1, "read")
    assert prep.fraction == pytest.approx(0.5)
    prep.plan({"reading": 1.0, "features": 99.0})  # the real clip counts: reading is cheap after all
    assert prep.fraction == pytest.approx(0.5)
    prep.begin("features")
    prep(60, 100, "features")
    assert prep.fraction == pytest.approx((1 + 0.6 * 99) / 100)


def test_the_real_loader_reports_one_monotone_bar_over_its_stages(tiny_dataset: Path, medley_cache: Path) -> None:
    """_default_loader on a real (tiny) dataset: real decoding and feature extraction, every stage."""
    fractions: list[float] = []
    stages: list[str] = []
    words: list[str] = []

    def report(p: PrepProgress) -> None:
        fractions.append(p.fraction)
        if p.stage and (not stages or stages[-1] != p.stage):
            stages.append(p.stage)
        words.append(p.stage_words)

    config = tiny_config().with_values(data=str(tiny_dataset))
    data = worker._default_loader(config, "cpu", PrepProgress(report))
    assert {"training", "validation", "test", "validation_shift", "validation_source"} <= set(data)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert stages == ["reading the dataset", "features", "cross-collection validation (channel)",
                      "cross-collection validation (source)"]  # no held-out programs in this dataset
    assert words[-1] == "4 of 4: cross-collection validation (source)"


def test_the_progress_line_shows_the_overall_fraction_stage_and_time_left() -> None:
    p = Progress("r", phase="loading data", message="features test: 4/32 clips", data_done=4, data_total=32,
                 prep_fraction=0.42, prep_eta=20.0, prep_stage="2 of 5: features")
    fraction, text = progress_line(vars(p), "running", 0, 50)
    assert fraction == pytest.approx(0.42)  # not the stage's own 4/32
    assert text == ("preparing features (before epoch 1): 42% · about 20 s left · "
                    "step 2 of 5: features (features test: 4/32 clips)")
    assert prep_words(0.42, 20.0, "2 of 5: features", "features test: 4/32 clips") in p.describe()  # the CLI's line


def test_the_sidebar_and_the_train_page_redraw_progress_at_one_pace() -> None:
    from ui import common, live, run_view

    assert common.JOBS_EVERY_BUSY_S == run_view.LIVE_EVERY_S == live.PROGRESS_EVERY_S


# ---- preparation time apart from training time ---------------------------------------------------------

PREPARE_S = 1.5  # how long the loaders below take to "prepare" the data


def slow_loader(config, device="cpu", progress=None):
    time.sleep(PREPARE_S)
    return synthetic_data(config)


def assert_apart(record) -> None:
    """prepare_seconds holds the loader's time; the training time (the epochs' clock) does not."""
    assert record.status == "finished", record.error
    assert record.prepare_seconds >= PREPARE_S
    # both lie between start and end, one after the other (time.time vs monotonic: a small tolerance)
    assert record.training_seconds + record.prepare_seconds <= record.duration + 0.25
    assert re.fullmatch(r"training \d+ s, preparing features [23] s", record.time_spent), record.time_spent


def test_a_threads_run_records_preparation_apart_from_training(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    manager = JobManager(store, data_loader=slow_loader)
    try:
        run_id = manager.submit(tiny_config(epochs=2))
        assert manager.wait([run_id], timeout=120)
        assert_apart(store.get(run_id))
    finally:
        manager.shutdown(timeout=10)


def test_a_worker_processes_run_records_preparation_apart_from_training(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(worker, "_default_loader", slow_loader)
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    config = tiny_config(epochs=2)
    run_id = store.create_run(config)
    store.set_status(run_id, "running")
    job = worker._WorkerJob([run_id], [config.to_json()], False, {run_id: threading.Event()})
    outbox = type("Outbox", (), {"send": lambda self, message: None})()
    cache: collections.OrderedDict = collections.OrderedDict()
    assert worker._worker_train(store, job, "cpu", 0.0, threading.Event(), cache, outbox) == {run_id: "finished"}
    assert_apart(store.get(run_id))
    # the next run on the same data finds it in the worker's cache: its preparation takes no time
    again = store.create_run(config)
    store.set_status(again, "running")
    job = worker._WorkerJob([again], [config.to_json()], False, {again: threading.Event()})
    worker._worker_train(store, job, "cpu", 0.0, threading.Event(), cache, outbox)
    assert store.get(again).prepare_seconds < 0.5


def test_runs_stored_before_the_field_still_read_and_say_what_they_know(tmp_path: Path) -> None:
    import sqlite3

    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    run_id = store.create_run(tiny_config())
    store.set_status(run_id, "running")
    store.append_epoch(run_id, {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5, "seconds": 5.0})
    store.set_status(run_id, "finished")
    store.close()
    con = sqlite3.connect(tmp_path / "runs.sqlite")  # a store made before issue #30: no such column
    con.execute("ALTER TABLE runs DROP COLUMN prepare_seconds")
    con.execute("UPDATE runs SET started=finished-49")
    con.commit()
    con.close()
    record = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs").get(run_id)  # adds the column back
    assert record.prepare_seconds is None and record.training_seconds == 5.0
    assert record.time_spent == "training 5 s (49 s from start to end, preparing features included)"


def test_time_spent_words() -> None:
    assert time_spent(5.2, 44.0, 50.0) == "training 5 s, preparing features 44 s"
    assert time_spent(None, 3.0, 4.0) == "preparing features 3 s, no epoch finished"
    assert time_spent(None, None, 12.0) == "12 s"
    assert time_spent(None, None, None) == ""


def test_cli_show_reports_training_and_preparation_apart(tmp_path: Path, capsys) -> None:
    import json

    from engine import cli

    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    manager = JobManager(store, data_loader=slow_loader)
    try:
        run_id = manager.submit(tiny_config(epochs=2))
        assert manager.wait([run_id], timeout=120)
    finally:
        manager.shutdown(timeout=10)
    store.close()
    assert cli.main(["--cache", str(tmp_path), "show", run_id]) == 0
    assert re.search(r"time: training \d+ s, preparing features [23] s", capsys.readouterr().out)
    assert cli.main(["--cache", str(tmp_path), "show", run_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["prepare_seconds"] >= PREPARE_S and 0 < shown["training_seconds"] < shown["prepare_seconds"] + 60


def test_a_rebuilt_store_keeps_the_preparation_time(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from engine.runs.store import rebuild_store

    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    run_id = store.create_run(tiny_config())
    store.set_status(run_id, "running")
    store.add_prepare_seconds(run_id, 44.0)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5, "seconds": 5.0}]
    store.save_result(run_id, SimpleNamespace(status="finished", error=None, device="cpu", state_dict={},
                                              standardizer=None, best_epoch=1, history=history, step_losses=[1.0],
                                              predictions={}, metrics={}))
    store.close()
    rebuild_store(tmp_path / "runs.sqlite", tmp_path / "runs")  # from the run folders alone
    record = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs").get(run_id)
    assert record.time_spent == "training 5 s, preparing features 44 s"
