"""Live views: progress lines, incremental store reads, charts rebuilt only on a new epoch,
what a queued run waits for, and the data-preparation progress of the job manager."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import gated_data, synthetic_data, tiny_config  # noqa: E402

from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402
from ui.live import LiveCharts, fmt_duration, progress_line  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")


def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def add_epoch(store: RunStore, run_id: str, epoch: int, steps: int = 3) -> None:
    store.append_epoch(run_id, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch,
                                "val_accuracy": 0.1 * epoch, "seconds": float(epoch)},
                       [float(epoch)] * steps)


def test_fmt_duration() -> None:
    assert fmt_duration(None) == "?"
    assert fmt_duration(12.4) == "12 s"
    assert fmt_duration(185) == "3 min 05 s"
    assert fmt_duration(3725) == "1 h 02 min"


def test_progress_lines_say_what_happens() -> None:
    assert progress_line({"phase": "queued"}, "queued", 0, 50, behind="study: SGD") == (0.0, "queued behind study: SGD")
    fraction, text = progress_line({"phase": "loading data", "message": "features training: 120/475 clips",
                                    "data_done": 120, "data_total": 1120}, "running", 0, 50)
    assert fraction == pytest.approx(120 / 1120) and "features training: 120/475 clips" in text
    fraction, text = progress_line({"phase": "training", "epoch": 3, "epochs": 50, "step": 2, "steps_per_epoch": 5,
                                    "train_loss": 1.2345, "val_accuracy": 0.5, "eta": 475.0, "fraction": 0.048},
                                   "running", 2, 50)
    assert fraction == 0.048
    assert text == "epoch 3/50 · step 2/5 · loss 1.234 · val acc. 50.0% · about 7 min 55 s left"
    _, text = progress_line({"phase": "training", "epoch": 1, "epochs": 50, "step": 0, "steps_per_epoch": 5,
                             "eta": None}, "running", 0, 50)
    assert "timing the first epoch" in text and "None" not in text
    assert progress_line({}, "running", 7, 50) == (7 / 50, "running: epoch 7/50")  # trained by another process


def test_step_losses_since_and_epochs_done_read_only_what_is_new(store: RunStore) -> None:
    run_id = store.create_run(tiny_config(epochs=5))
    assert store.epochs_done(run_id) == 0
    for epoch in (1, 2, 3):
        add_epoch(store, run_id, epoch)
    assert store.epochs_done(run_id) == 3
    assert store.step_losses(run_id) == [1.0] * 3 + [2.0] * 3 + [3.0] * 3
    assert store.step_losses(run_id, since_epoch=2) == [3.0] * 3
    assert store.step_losses(run_id, since_epoch=3) == []


def test_live_charts_rebuild_only_when_an_epoch_is_stored(store: RunStore) -> None:
    run_id = store.create_run(tiny_config(epochs=5), name="live")
    charts = LiveCharts()
    assert charts.update(store, run_id) == {"steps": None, "accuracy": None}
    add_epoch(store, run_id, 1)
    first = charts.update(store, run_id)
    assert charts.builds == 1 and first["steps"] is not None and first["accuracy"] is not None
    for _ in range(5):  # timer refreshes with nothing new: the same specs, nothing rebuilt
        assert charts.update(store, run_id) is first
    assert charts.builds == 1
    add_epoch(store, run_id, 2)
    second = charts.update(store, run_id)
    assert charts.builds == 2 and charts.losses == [1.0] * 3 + [2.0] * 3  # appended, not re-read
    values = [row["value"] for row in next(iter(second["accuracy"]["datasets"].values()))]
    assert values == pytest.approx([0.1, 0.2])
    other = store.create_run(tiny_config(epochs=5), name="other")  # switching runs starts afresh
    assert charts.update(store, other) == {"steps": None, "accuracy": None} and charts.losses == []


def test_queued_runs_know_what_they_wait_for(store: RunStore) -> None:
    gate = threading.Event()
    manager = JobManager(store, max_concurrent=1, data_loader=gated_data(gate, timeout=20))
    first, second, third = (manager.submit(tiny_config(**{"train.seed": s}), name=f"r{s}") for s in range(3))
    until(lambda: manager.progress(first).phase == "loading data")
    assert manager.queued_behind(first) == []
    assert manager.queued_behind(second) == [first]
    assert manager.queued_behind(third) == [second, first]  # nearest first
    gate.set()
    assert manager.wait([first, second, third], timeout=60)
    assert manager.queued_behind(third) == []


def test_manager_reports_data_progress_and_an_eta_from_epochs(store: RunStore, monkeypatch) -> None:
    from engine.runs import jobs

    seen: list[tuple[int, int]] = []

    def fake_loader(config, device, progress):
        for done in range(0, 101, 25):
            progress(done, 100, f"features training: {done}/100 clips")
            seen.append((done, 100))
        return synthetic_data(config)

    monkeypatch.setattr(jobs, "_default_loader", fake_loader)
    manager = JobManager(store)
    run_id = manager.submit(tiny_config(epochs=3))
    assert manager.wait([run_id], timeout=60)
    p = manager.progress(run_id)
    assert (p.data_done, p.data_total) == (100, 100) and seen[-1] == (100, 100)
    assert p.eta == 0.0  # measured, and nothing left


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch) -> tuple[str, RunStore, JobManager]:
    """(tiny dataset folder, store, a JobManager training in worker processes); shut down after."""
    from conftest import write_tiny_dataset

    data = str(write_tiny_dataset(tmp_path / "data", per_class=2))
    monkeypatch.setenv("MEDLEY_CACHE", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    manager = JobManager(store, isolation="process")
    yield data, store, manager
    manager.shutdown()


def test_process_isolation_trains_reports_and_cancels(in_process) -> None:
    """Runs trained in a worker process: the same store records, progress relayed to the
    manager, a cancel reaches the process, and the process is reused for the next run."""
    data, store, manager = in_process
    try:
        done = manager.submit(tiny_config(epochs=3).with_values(data=data), name="in a process")
        long = manager.submit(tiny_config(epochs=5000).with_values(data=data), name="cancel me")
        assert manager.wait([done], timeout=180)
        record = store.get(done)
        assert record.status == "finished", record.error
        assert record.epochs_done == 3 and record.metrics["test"]["n"] == 16
        p = manager.progress(done)
        assert p.phase == "finished" and p.data_total > 0 and p.eta == 0.0
        until(lambda: (manager.progress(long).epoch or 0) >= 2, timeout=120)  # progress relayed from the process
        manager.cancel(long)
        assert manager.wait([long], timeout=60)
        assert store.get(long).status == "cancelled" and 2 <= store.get(long).epochs_done < 5000
        assert len(manager._workers) == 1  # one process trained both, and waits for more
    finally:
        manager.shutdown()
    assert manager._workers == []


def test_process_isolation_refuses_a_custom_loader(store: RunStore) -> None:
    from engine.core.errors import ConfigError

    with pytest.raises(ConfigError, match="isolation='thread'"):
        JobManager(store, data_loader=synthetic_data, isolation="process")


def test_a_killed_worker_process_fails_its_run_with_a_message(in_process) -> None:
    import multiprocessing
    import os
    import signal

    data, store, manager = in_process
    others = {p.pid for p in multiprocessing.active_children() if p.name == "medley-train-worker"}  # other tests'
    run_id = manager.submit(tiny_config(epochs=5000).with_values(data=data), name="doomed")
    until(lambda: (manager.progress(run_id).epoch or 0) >= 1, timeout=120)
    workers = [p for p in multiprocessing.active_children() if p.name == "medley-train-worker" and p.pid not in others]
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGKILL)
    assert manager.wait([run_id], timeout=30)
    record = store.get(run_id)
    assert record.status == "failed" and "stopped unexpectedly" in record.error
    again = manager.submit(tiny_config(epochs=2).with_values(data=data), name="next")  # a fresh process
    assert manager.wait([again], timeout=120) and store.get(again).status == "finished"


def test_worker_processes_do_not_run_the_parents_main(in_process, tmp_path: Path) -> None:
    """Under Streamlit `__main__` is the page script last run; a spawned worker must not run it."""
    import types

    data, store, manager = in_process
    marker = tmp_path / "page-ran"
    page = tmp_path / "page.py"
    page.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(page)
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = fake_main  # what Streamlit's script runner leaves behind
    try:
        run_id = manager.submit(tiny_config(epochs=1).with_values(data=data), name="clean child")
        assert manager.wait([run_id], timeout=180)
    finally:
        sys.modules["__main__"] = saved
    assert store.get(run_id).status == "finished", store.get(run_id).error
    assert not marker.exists()
