"""JobManager: concurrency limit, cancel, failures, submit races, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import gated_data, synthetic_data, tiny_config  # noqa: E402

from engine.core.errors import ConfigError  # noqa: E402
from engine.runs.jobs import JobError, JobManager  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")


def until(condition, timeout: float = 10.0) -> None:
    """Poll `condition()` every 10 ms; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_concurrency_limit_holds(store: RunStore) -> None:
    gate, seen, lock = threading.Event(), [], threading.Lock()

    def loader(config):
        with lock:
            seen.append(len(store.list_runs(status="running")))
        gate.wait(10)
        return synthetic_data(config)

    manager = JobManager(store, max_concurrent=2, data_loader=loader, group_runs=False)  # one run per slot
    ids = [manager.submit(tiny_config(**{"train.seed": s})) for s in range(5)]
    until(lambda: len(seen) == 2)
    time.sleep(0.1)
    assert len(seen) == 2
    assert sorted(store.get(r).status for r in ids) == ["queued"] * 3 + ["running"] * 2
    assert manager.progress(ids[0]).phase == "loading data"
    gate.set()
    assert manager.wait(ids, timeout=20)
    assert [store.get(r).status for r in ids] == ["finished"] * 5
    assert max(seen) == 2 and len(seen) == 5
    assert all(store.get(r).history[-1]["epoch"] == 2 for r in ids)
    assert manager.progress(ids[0]).phase == "finished"


def test_cancel_running_and_queued(store: RunStore) -> None:
    manager = JobManager(store, max_concurrent=1, data_loader=synthetic_data)
    long_run = manager.submit(tiny_config(epochs=2000))
    waiting = manager.submit(tiny_config())
    manager.cancel(waiting)
    assert store.get(waiting).status == "cancelled"
    until(lambda: len(store.get(long_run).history) >= 1)
    assert manager.progress(long_run).phase == "training" and manager.progress(long_run).eta is not None
    manager.cancel(long_run)
    assert manager.wait([long_run], timeout=30)  # within a step; the bound only guards a slow, shared machine
    record = store.get(long_run)
    assert record.status == "cancelled" and 1 <= len(record.history) < 2000
    assert store.get(waiting).started is None

    manager.resume(long_run)  # from its checkpoint, under the same id
    assert store.get(long_run).status in ("queued", "running")
    manager.cancel(long_run)
    assert manager.wait([long_run], timeout=5)
    assert store.get(long_run).status == "cancelled" and len(store.get(long_run).history) >= 1
    one = manager.submit(tiny_config(epochs=1))
    assert manager.wait([one], timeout=10)
    with pytest.raises(JobError, match="is finished"):
        manager.resume(one)


def test_failures_are_recorded_and_others_go_on(store: RunStore) -> None:
    def loader(config):
        if config.train.seed == 13:
            raise RuntimeError("disk on fire")
        data = synthetic_data(config)
        if config.train.seed == 14:
            data["training"].x = data["training"].x[:, :, :5]  # wrong feature count
        return data

    manager = JobManager(store, max_concurrent=2, data_loader=loader)
    bad, wrong, good = (manager.submit(tiny_config(**{"train.seed": s})) for s in (13, 14, 0))
    assert manager.wait(timeout=20)
    assert store.get(good).status == "finished"
    failed = store.get(bad)
    assert failed.status == "failed" and "disk on fire" in failed.error and "RuntimeError" in failed.error
    assert store.get(wrong).status == "failed" and "expects" in store.get(wrong).error
    assert manager.progress(bad).phase == "failed"


def test_simultaneous_submissions_from_threads(store: RunStore) -> None:
    manager = JobManager(store, max_concurrent=2, data_loader=synthetic_data)
    barrier, ids = threading.Barrier(2), {}

    def submit(seed: int) -> None:
        barrier.wait()
        ids[seed] = manager.submit(tiny_config(**{"train.seed": seed}), name=f"seed {seed}")

    threads = [threading.Thread(target=submit, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert manager.wait(list(ids.values()), timeout=20)
    for seed, run_id in ids.items():
        record = store.get(run_id)
        assert record.name == f"seed {seed}" and record.config.train.seed == seed and record.status == "finished"


def test_grid_and_seed_repeats(store: RunStore) -> None:
    manager = JobManager(store, data_loader=synthetic_data)
    gate = threading.Event()
    manager._data_loader = gated_data(gate)
    grid = manager.submit_grid(tiny_config(epochs=1), {"train.lr": [1e-2, 1e-3], "model.dropout": [0.0, 0.2]},
                               name_prefix="g", tags=["grid"])
    seeds = manager.repeat_seeds(tiny_config(epochs=1), [1, 2], name="rep")
    with pytest.raises(ConfigError):
        manager.submit_grid(tiny_config(), {"train.nope": [1]})
    configs = [store.get(r).config for r in grid]
    assert {(c.train.lr, c.model.dropout) for c in configs} == {(1e-2, 0.0), (1e-2, 0.2), (1e-3, 0.0), (1e-3, 0.2)}
    assert store.get(grid[0]).name == "lr 0.01, dropout 0 of g" and store.get(grid[0]).tags == ["grid"]
    assert store.get(grid[3]).name == "lr 1e-3, dropout 0.2 of g"
    assert store.get(seeds[1]).name == "seed 2 of rep"
    assert store.get(seeds[0]).group_key == store.get(seeds[1]).group_key
    manager.shutdown(timeout=0.1)  # queued runs end 'interrupted', the running one too
    gate.set()
    until(lambda: all(store.get(r).status == "interrupted" for r in grid + seeds))
    new = JobManager(store, data_loader=synthetic_data)
    again = new.restart(seeds[0])
    assert new.wait([again], timeout=20) and store.get(again).status == "finished"
    assert store.get(again).config == store.get(seeds[0]).config


def test_kill_then_resume(store: RunStore, tmp_path: Path) -> None:
    epochs = 40
    script = Path(__file__).resolve().parent / "helpers_jobs.py"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs.sqlite"), str(tmp_path / "runs"),
                             str(epochs), "0.02"], stdout=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().strip()
        until(lambda: store.get(run_id).status == "running" and store.get(run_id).history
              and store.has_checkpoint(run_id), timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert store.get(run_id).status == "running"  # nobody noticed yet

    manager = JobManager(store, data_loader=synthetic_data)
    assert manager.interrupted == [run_id] and store.get(run_id).status == "interrupted"
    done_before = store.load_checkpoint(run_id)["epoch"]
    assert 1 <= done_before < epochs
    manager.resume(run_id)
    assert manager.wait([run_id], timeout=30)
    record = store.get(run_id)
    assert record.status == "finished", record.error
    assert [h["epoch"] for h in record.history] == list(range(1, epochs + 1))
    assert len(store.step_losses(run_id)) == epochs * 3  # 48 clips / batch 16
    assert not store.has_checkpoint(run_id)


def test_seed_repeats_train_as_one_group_with_the_numbers_of_lone_runs(store: RunStore, tmp_path: Path) -> None:
    loads: list[int] = []

    def loader(config):
        loads.append(1)
        return synthetic_data(config)

    manager = JobManager(store, max_concurrent=1, data_loader=loader)
    base = tiny_config(epochs=3, **{"model.num_layers": 2, "model.dropout": 0.2})
    other = manager.submit(tiny_config(**{"train.lr": 1e-3}), name="other")  # starts at once, alone
    ids = manager.repeat_seeds(base, [0, 1, 2], name="rep")
    assert manager.wait([other, *ids], timeout=60)
    assert len(loads) == 2  # the lone run, then the group once
    alone = JobManager(RunStore(tmp_path / "alone.sqlite", tmp_path / "alone"), data_loader=synthetic_data,
                       group_runs=False)
    lone_ids = alone.repeat_seeds(base, [0, 1, 2], name="rep")
    assert alone.wait(lone_ids, timeout=60)
    for seed, grouped_id, lone_id in zip((0, 1, 2), ids, lone_ids):
        grouped, lone = store.get(grouped_id), alone.store.get(lone_id)
        assert grouped.status == lone.status == "finished" and grouped.name == f"seed {seed} of rep"
        assert store.step_losses(grouped_id) == pytest.approx(alone.store.step_losses(lone_id), rel=1e-5, abs=1e-5)
        assert store.load_meta(grouped_id)["trained_in_group"] == {"size": 3, "seeds": [0, 1, 2], "member": seed}
        assert "trained_in_group" not in alone.store.load_meta(lone_id)
        assert not store.has_checkpoint(grouped_id)
    assert "trained_in_group" not in store.load_meta(other)
    manager.shutdown()
    alone.shutdown()


def test_a_member_of_a_group_cancels_alone(store: RunStore) -> None:
    gate = threading.Event()
    manager = JobManager(store, max_concurrent=1, data_loader=gated_data(gate))
    ids = manager.repeat_seeds(tiny_config(epochs=3), [0, 1, 2])
    until(lambda: store.get(ids[0]).status == "running")
    assert [store.get(r).status for r in ids] == ["running"] * 3  # one group, one slot
    manager.cancel(ids[1])
    gate.set()
    assert manager.wait(ids, timeout=60)
    assert [store.get(r).status for r in ids] == ["finished", "cancelled", "finished"]
    assert len(store.get(ids[0]).history) == 3
    manager.shutdown()


def test_shutdown_waits_for_worker_threads_still_freeing_after_their_run_ended(store: RunStore, monkeypatch) -> None:
    """A run leaves the manager's books before its thread is gone (the thread still frees its tensors);
    an exit in that gap killed a daemon thread inside torch and aborted the CLI ("terminate called
    without an active exception", exit 134, after "3/3 runs done"). shutdown must join those threads."""
    manager = JobManager(store, max_concurrent=1, data_loader=synthetic_data)
    work = manager._work

    def slow_tail(run_id: str) -> None:  # the run's work, then a slow end of its thread (off the books, no lock)
        work(run_id)
        time.sleep(0.8)

    monkeypatch.setattr(manager, "_work", slow_tail)
    run_id = manager.submit(tiny_config(epochs=1))
    workers = [t for t in threading.enumerate() if t.name.startswith("train-")]
    assert manager.wait([run_id], timeout=60)
    assert any(t.is_alive() for t in workers)  # the gap the fix is about: the run has ended, its thread has not
    manager.shutdown()
    assert not any(t.is_alive() for t in workers)
