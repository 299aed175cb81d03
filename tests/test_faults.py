"""Faults end runs cleanly and say why (#33): a full disk or a store that cannot be written at
each write point in turn, a stopped CLI, a real full filesystem (tmpfs). Every test asserts the
run's terminal state, the message in words, that no partial file is taken as complete, and
that Resume works once the fault is gone."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_faults import TINY_FLAGS, Faults, synthetic_loader  # noqa: E402
from helpers_jobs import synthetic_data, tiny_config  # noqa: E402

from engine.core import space  # noqa: E402
from engine.core.errors import DiskFull, StoreError  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.store import RunStore, stored_run_folders  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POINTS = ["store", "checkpoint", "model", "predictions", "meta"]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")


def until(condition, timeout: float) -> None:
    """Poll `condition()` every 50 ms; fail the test after `timeout` seconds (a liveness bound)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def assert_in_words(message: str, folder: Path) -> None:
    """The disk-full message: which folder, how much is free, what to do."""
    assert "no space left on the disk holding" in message and str(folder) in message, message
    assert " free" in message and "free space" in message and "then Resume" in message, message


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def resume_to_the_end(store: RunStore, run_id: str, epochs: int) -> None:
    """Resume in a fresh manager: it continues from the kept checkpoint and finishes."""
    before = store.get(run_id).history
    checkpoint = store.load_checkpoint(run_id)
    assert checkpoint is not None and checkpoint["epoch"] >= 1  # the last good checkpoint stayed
    manager = JobManager(store, data_loader=synthetic_data, checkpoint_every_s=0.0, device="cpu")
    try:
        manager.resume(run_id)
        assert manager.wait([run_id], timeout=120)
    finally:
        manager.shutdown()
    after = store.get(run_id)
    assert after.status == "finished", after.error
    assert [h["epoch"] for h in after.history] == list(range(1, epochs + 1))
    kept = int(checkpoint["epoch"])
    assert after.history[:kept] == before[:kept]  # continued, not started over
    assert store.load_state_dict(run_id) and run_id in [p.name for p in stored_run_folders(store.runs_dir)]


# ---- the message --------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    sqlite3.OperationalError("database or disk is full"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 505664 vs 505552"),
])
def test_full_disk_is_recognised_through_wrapping(exc):
    try:
        try:
            raise exc
        except Exception as inner:
            raise StoreError("the run store failed") from inner
    except StoreError as outer:
        assert space.is_disk_full(outer)
    assert not space.is_disk_full(PermissionError(errno.EACCES, "Permission denied"))


def test_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"good")

    def half_then_full(tmp: Path) -> None:
        tmp.write_bytes(b"hal")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(DiskFull) as caught:
        space.atomic_write(target, half_then_full, "saving the model", needed=12_500_000)
    assert_in_words(str(caught.value), tmp_path)
    assert "saving the model" in str(caught.value) and "12.5 MB" in str(caught.value)
    assert target.read_bytes() == b"good" and temp_files(tmp_path) == []


def test_a_run_refuses_to_start_without_room(store, monkeypatch):
    monkeypatch.setattr(space, "free_bytes", lambda folder: 35_000_000)  # the 35 MB
    config = tiny_config(epochs=2).with_values(**{"model.hidden_size": 512, "model.num_layers": 2})
    manager = JobManager(store, data_loader=synthetic_data, device="cpu")
    try:
        run_id = manager.submit(config)
        assert manager.wait([run_id], timeout=60)
    finally:
        manager.shutdown()
    record = store.get(run_id)
    assert record.status == "failed" and record.history == []
    assert "not enough space on the disk holding" in record.error and "35.0 MB free" in record.error
    assert "then Resume" in record.error
    assert not (store.runs_dir / run_id / "checkpoint.pt").exists()


def test_the_features_step_refuses_before_extracting(tiny_dataset, medley_cache, monkeypatch):
    from engine.core.config import FeatureConfig
    from engine.data.dataset import load_dataset
    from engine.features import extract

    monkeypatch.setattr(space, "free_bytes", lambda folder: 1_000)
    monkeypatch.setattr(extract, "_extract", lambda *a, **k: pytest.fail("extracted with no room to cache"))
    with pytest.raises(DiskFull, match="not enough space .* to start caching the training features"):
        extract.load_features(load_dataset(tiny_dataset), FeatureConfig())


# ---- each write point in turn, in a JobManager --------------------------------------------


@pytest.mark.parametrize("point", POINTS)
def test_a_fault_at_each_write_point_ends_the_run_in_words_and_resume_finishes(store, monkeypatch, point):
    faults = Faults(point).install(monkeypatch)
    manager = JobManager(store, data_loader=synthetic_data, checkpoint_every_s=0.0, device="cpu")
    try:
        run_id = manager.submit(tiny_config(epochs=3))
        assert manager.wait([run_id], timeout=120), "a run whose work ended still counts as running"
        assert faults.hits, "the fault never fired"
        record = manager.record(run_id)
        assert record.status == "failed"
        folder = store.db_path.parent if point == "store" else store.runs_dir / run_id
        assert_in_words(record.error, folder)
        if point == "store":  # the store could not take the end: kept in memory, written when it can
            assert store.stored_status(run_id) == "running" and run_id in manager.unsaved_ends()
            assert (store.get(run_id).status, store.list_runs()[0].status) == ("failed", "failed")  # what views read
            assert store.kept_end(run_id) == ("failed", record.error)  # for the next process, should this one stop
            faults.active = False  # space returns
            until(lambda: store.stored_status(run_id) == "failed", timeout=30)
            assert store.get(run_id).error == record.error and manager.unsaved_ends() == {}
        else:
            assert store.status(run_id) == "failed"
    finally:
        faults.active = False
        manager.shutdown()
    run_dir = store.runs_dir / run_id
    assert temp_files(store.runs_dir) == []
    assert run_id not in [p.name for p in stored_run_folders(store.runs_dir)]  # no meta.json: not a saved result
    if point in ("checkpoint", "model"):
        assert not (run_dir / "model.pt").exists()
    resume_to_the_end(store, run_id, epochs=3)


def test_the_store_full_at_creation_says_so(store, monkeypatch):
    faults = Faults("store").install(monkeypatch)
    faults.armed = True
    with pytest.raises(DiskFull) as caught:
        store.create_run(tiny_config())
    assert_in_words(str(caught.value), store.db_path.parent)


# ---- the CLI ------------------------------------------------------------------------------


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from engine import cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("point", ["store", "model"])
def test_the_cli_returns_nonzero_with_the_reason_when_the_store_cannot_take_the_end(medley_cache, monkeypatch, point):
    from engine.runs import jobs

    monkeypatch.setattr(jobs, "_default_loader", synthetic_loader)
    faults = Faults(point).install(monkeypatch)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        out=_cli(["train", "--epochs", "3", *TINY_FLAGS, "--device", "cpu", "--json"])), daemon=True)
    worker.start()
    worker.join(120)  # liveness bound: the CLI never returned
    assert not worker.is_alive(), "the CLI did not return after the run failed"
    code, stdout, stderr = result["out"]
    summary = json.loads(stdout)
    assert code == 1 and summary["status"] == "failed"
    assert_in_words(summary["error"], medley_cache if point == "store" else medley_cache / "runs" / summary["run_id"])
    assert f"run {summary['run_id']} failed: no space left" in stderr
    faults.active = False
    store = RunStore(medley_cache / "runs.sqlite", medley_cache / "runs")
    if point == "store":  # the CLI is gone with the end unstored: the next reader finds the kept one
        assert "could not record this end yet" in stderr and store.stored_status(summary["run_id"]) == "running"
        assert store.mark_interrupted(alive=lambda pid, start: False) == [summary["run_id"]]
    record = store.get(summary["run_id"])
    assert (record.status, record.error) == ("failed", summary["error"])  # the reason, not "interrupted"
    resume_to_the_end(store, summary["run_id"], epochs=3)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_train_ends_its_run_cancelled_and_resumable(tmp_path, signum, code):
    cache = tmp_path / "cache"
    epochs = 40
    # The child starts with SIGINT at its default: a shell without job control (CI started in the
    # background) hands its background jobs SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers_faults.py"), str(cache), str(epochs), "0.05"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        def trained_an_epoch() -> bool:
            if proc.poll() is not None or not (cache / "runs.sqlite").exists():
                return proc.poll() is not None
            try:
                with sqlite3.connect(cache / "runs.sqlite") as con:
                    row = con.execute("SELECT id, history FROM runs").fetchone()
            except sqlite3.OperationalError:  # the store is being created (no table yet)
                return False
            return row is not None and len(json.loads(row[1])) >= 1 and (cache / "runs" / row[0] / "checkpoint.pt").exists()

        until(trained_an_epoch, timeout=180)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)  # exits within the cancel wait, not after training
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr[-2000:]
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    [record] = store.list_runs()
    assert record.status == "cancelled", (record.status, record.error)
    assert 1 <= len(record.history) < epochs
    resume_to_the_end(store, record.id, epochs=epochs)


# ---- a real full filesystem ---------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs mounted for the test (root only; skipped with the reason elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file so that about `leave` bytes stay free on `disk`."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        chunk = b"\0" * (1 << 20)
        while (space.free_bytes(disk) or 0) - len(chunk) > leave:
            handle.write(chunk)
            handle.flush()
        rest = max(0, (space.free_bytes(disk) or 0) - leave)
        handle.write(b"\0" * rest)
    return filler


def test_a_real_full_disk_fails_the_run_in_words_and_resume_finishes_after_freeing(small_disk, monkeypatch):
    from engine.runs import jobs

    monkeypatch.setattr(jobs, "check_run_space", lambda *a: None)  # let it start, to meet the full disk mid-run
    store = RunStore(small_disk / "runs.sqlite", small_disk / "runs")
    config = tiny_config(epochs=3).with_values(**{"model.hidden_size": 256})  # 1.3 MB model, ~4 MB checkpoint
    filler = fill(small_disk, leave=6_000_000)  # room for the first checkpoint, not for the next beside it
    manager = JobManager(store, data_loader=synthetic_data, checkpoint_every_s=0.0, device="cpu")
    try:
        run_id = manager.submit(config)
        assert manager.wait([run_id], timeout=120)
        record = manager.record(run_id)
        assert record.status == "failed", record.error
        assert "no space left on the disk holding" in record.error and str(small_disk) in record.error
        assert "then Resume" in record.error
        assert temp_files(small_disk) == []
        filler.unlink()  # space returns: the end reaches the store (now, or at the next heartbeat)
        until(lambda: store.stored_status(run_id) == "failed", timeout=30)
    finally:
        manager.shutdown()
    assert run_id not in [p.name for p in stored_run_folders(store.runs_dir)]
    resume_to_the_end(store, run_id, epochs=3)


def test_a_real_small_disk_refuses_the_run_before_it_starts(small_disk):
    store = RunStore(small_disk / "runs.sqlite", small_disk / "runs")
    fill(small_disk, leave=1_000_000)
    manager = JobManager(store, data_loader=synthetic_data, device="cpu")
    try:
        run_id = manager.submit(tiny_config(epochs=2))
        assert manager.wait([run_id], timeout=60)
    finally:
        manager.shutdown()
    record = manager.record(run_id)
    assert record.status == "failed" and "not enough space on the disk holding" in record.error
    assert str(small_disk) in record.error and record.history == []


# ---- space is visible ---------------------------------------------------------------------


def test_runs_lists_sizes_and_the_total_and_delete_says_what_it_freed(medley_cache, monkeypatch):
    from engine.runs import jobs

    monkeypatch.setattr(jobs, "_default_loader", synthetic_loader)
    code, stdout, _ = _cli(["train", "--epochs", "1", *TINY_FLAGS, "--device", "cpu", "--json"])
    run_id = json.loads(stdout)["run_id"]
    assert code == 0
    size = RunStore(medley_cache / "runs.sqlite", medley_cache / "runs").run_bytes(run_id)
    assert size > 0
    code, stdout, _ = _cli(["runs"])
    assert code == 0 and space.format_bytes(size) in stdout.splitlines()[0]
    assert stdout.splitlines()[-1].startswith("store: ") and " free on its disk" in stdout
    code, stdout, _ = _cli(["runs", "--json"])
    assert json.loads(stdout)[0]["bytes"] == size
    code, _, stderr = _cli(["delete", run_id])
    assert code == 0 and f"deleted run {run_id}: {space.format_bytes(size)} freed" in stderr
    assert not (medley_cache / "runs" / run_id).exists()


# ---- the data steps -----------------------------------------------------------------------


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_full_disk_while_writing_the_demo_says_so_and_leaves_no_half_folder(tmp_path, monkeypatch):
    from engine.data import demo

    real = demo._write_metadata

    def full(path, specs):  # the clips are written; the CSV meets the full disk
        path.write_text("half")
        raise _enospc(path)

    monkeypatch.setattr(demo, "_write_metadata", full)
    root = tmp_path / "demo" / "tiny"
    with pytest.raises(DiskFull) as caught:
        demo.make_demo("tiny", root, workers=1)
    assert_in_words(str(caught.value), root.parent)
    assert "writing the tiny demo dataset" in str(caught.value)
    assert list(root.parent.iterdir()) == []  # neither the folder nor its temporary one
    monkeypatch.setattr(demo, "_write_metadata", real)
    assert demo.demo_is_complete(demo.make_demo("tiny", root, workers=1))


def test_a_full_disk_while_caching_features_says_so_and_caches_nothing_partial(tiny_dataset, medley_cache, monkeypatch):
    import numpy as np

    from engine.core.config import FeatureConfig
    from engine.data.dataset import load_dataset
    from engine.features import extract

    real = np.save

    def full(handle, x, **kwargs):
        handle.write(b"\x93NUMPY partial")
        raise _enospc(handle.name)

    monkeypatch.setattr(np, "save", full)
    ds = load_dataset(tiny_dataset)
    with pytest.raises(DiskFull) as caught:
        extract.load_features(ds, FeatureConfig())
    cache = medley_cache / "features"
    assert_in_words(str(caught.value), cache) and "caching features" in str(caught.value)
    assert [p.name for p in cache.rglob("*") if p.is_file()] == []
    monkeypatch.setattr(np, "save", real)
    data = extract.load_features(ds, FeatureConfig())
    again = extract.load_features(ds, FeatureConfig())  # from the cache, checked by its checksum
    assert np.array_equal(data["training"].x, again["training"].x)
