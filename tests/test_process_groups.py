"""Seed repeats in training worker processes (JobManager(isolation="process"), the dashboard's
choice): queued runs that can train together are one job of one worker, trained by
`engine.learn.batched.train_group`, and each is still an ordinary run with its own progress,
cancel, checkpoints and failure.

Tolerances from tests/helpers_numeric.py (its docstring says why).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402
from helpers_numeric import LOSS_TOL, assert_same_accuracy, assert_same_history  # noqa: E402
from test_live import in_process, until  # noqa: E402,F401  (in_process: a fixture)

from engine.runs import worker  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402

def group_config(data: str, epochs: int):
    """Two LSTM layers with dropout between them: the members' own dropout generators matter."""
    return tiny_config(epochs=epochs, **{"model.num_layers": 2, "model.dropout": 0.2}).with_values(data=data)


def workers_now(others: set[int]) -> list:
    return [p for p in multiprocessing.active_children() if p.name == "medley-train-worker" and p.pid not in others]


def test_seed_repeats_train_as_one_group_in_a_worker_process(in_process, tmp_path: Path) -> None:
    data, store, manager = in_process
    ids = manager.repeat_seeds(group_config(data, 4), [0, 1, 2], name="rep")
    assert manager.wait(ids, timeout=180)
    alone = JobManager(RunStore(tmp_path / "alone.sqlite", tmp_path / "alone"), group_runs=False)
    try:
        lone_ids = alone.repeat_seeds(group_config(data, 4), [0, 1, 2], name="rep")
        assert alone.wait(lone_ids, timeout=180)
    finally:
        alone.shutdown()
    for seed, grouped_id, lone_id in zip((0, 1, 2), ids, lone_ids):
        grouped, lone = store.get(grouped_id), alone.store.get(lone_id)
        assert (grouped.status, lone.status) == ("finished", "finished"), (grouped.error, lone.error)
        assert store.load_meta(grouped_id)["trained_in_group"] == {"size": 3, "seeds": [0, 1, 2], "member": seed}
        assert "trained_in_group" not in alone.store.load_meta(lone_id)
        assert_same_history(lone.history, grouped.history, lone.metrics["validation"]["n"])
        np.testing.assert_allclose(store.step_losses(grouped_id), alone.store.step_losses(lone_id), **LOSS_TOL)
        assert_same_accuracy(grouped.metrics["test"]["accuracy"], lone.metrics["test"]["accuracy"], lone.metrics["test"]["n"])
        p = manager.progress(grouped_id)  # each member's own progress, relayed from the process
        assert p.phase == "finished" and p.epoch == 4 and p.data_total > 0 and p.eta == 0.0
        assert not store.has_checkpoint(grouped_id)
    assert len(manager._workers) == 1  # one process trained the group and waits for more


def test_a_member_cancels_alone_in_a_worker_process(in_process) -> None:
    data, store, manager = in_process
    ids = manager.repeat_seeds(group_config(data, 100_000), [0, 1, 2], name="rep")
    until(lambda: all((manager.progress(r).epoch or 0) >= 2 for r in ids), timeout=180)
    manager.cancel(ids[1])
    until(lambda: store.get(ids[1]).status == "cancelled", timeout=60)
    stopped_at = store.get(ids[1]).epochs_done
    until(lambda: all(store.get(r).epochs_done >= stopped_at + 3 for r in (ids[0], ids[2])), timeout=60)
    assert [store.get(r).status for r in (ids[0], ids[2])] == ["running", "running"]  # the others go on
    assert store.load_meta(ids[1])["trained_in_group"]["member"] == 1
    for run_id in (ids[0], ids[2]):
        manager.cancel(run_id)
    assert manager.wait(ids, timeout=60)
    assert [store.get(r).status for r in ids] == ["cancelled"] * 3


def test_a_killed_group_worker_fails_every_member_and_they_resume(in_process) -> None:
    data, store, manager = in_process
    others = {p.pid for p in multiprocessing.active_children() if p.name == "medley-train-worker"}
    ids = manager.repeat_seeds(group_config(data, 100_000), [0, 1], name="doomed")
    until(lambda: all(store.has_checkpoint(r) for r in ids), timeout=180)
    workers = workers_now(others)
    assert len(workers) == 1  # one process for the whole group
    os.kill(workers[0].pid, signal.SIGKILL)
    assert manager.wait(ids, timeout=30)
    for run_id in ids:
        record = store.get(run_id)
        assert record.status == "failed" and "stopped unexpectedly" in record.error
    manager.resume(ids[0])  # from its checkpoint, alone, in a fresh process
    until(lambda: (manager.progress(ids[0]).epoch or 0) >= store.load_checkpoint(ids[0])["epoch"] + 1, timeout=180)
    assert store.get(ids[0]).status == "running"
    manager.cancel(ids[0])
    assert manager.wait([ids[0]], timeout=60) and store.get(ids[0]).status == "cancelled"


def test_a_worker_reloads_data_when_the_augmentation_differs(tmp_path: Path, monkeypatch) -> None:
    """The worker's data cache is keyed as the thread's (worker.data_key): a run without
    augmentation never gets the augmented views a run before it loaded (and the reverse)."""
    loaded: list[str] = []

    def loader(config, device, progress):
        loaded.append(config.train.augment)
        return synthetic_data(config)

    monkeypatch.setattr(worker, "_default_loader", loader)
    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    cache: collections.OrderedDict = collections.OrderedDict()
    for augment in ("gain", "", "gain"):
        config = tiny_config(epochs=1, **{"train.augment": augment})
        run_id = store.create_run(config)
        job = worker._WorkerJob([run_id], [config.to_json()], False, {run_id: threading.Event()})
        outbox = type("Outbox", (), {"send": lambda self, message: None})()
        assert worker._worker_train(store, job, "cpu", 0.0, threading.Event(), cache, outbox) == {run_id: "finished"}
    assert loaded == ["gain", ""]  # the third run found its data in the cache
