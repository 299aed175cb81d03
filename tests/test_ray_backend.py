"""The ray backend (engine.runs.ray_backend) on one local Ray with 2 CPUs, shared by the module.

Tiny synthetic runs (helpers_jobs): a Ray run stores what a local run stores; features go to
the object store once per key; cancel (cooperative and forced) and resume; a killed driver
leaves its run interrupted and resumable; two drivers on one cluster see their own runs; the
CLI's --backend ray; and the message when Ray is not installed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402
from test_e2e_browser import server  # noqa: E402,F401  (the fixture: a fresh dashboard server)

from engine.runs import ray_backend  # noqa: E402
from engine.core.errors import ConfigError  # noqa: E402
from engine.features.extract import FeatureSet  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.ray_backend import RayMissing, RayOptions, backend_from_env  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def feature_data(config, n: int = 48):
    """helpers_jobs.synthetic_data as engine FeatureSets (a Ray worker unpickles them: the
    classes must be importable there, and the tests folder is not)."""
    return {split: FeatureSet(f.x, f.y, f.ids) for split, f in synthetic_data(config, n=n).items()}


def slower_data(config):
    """1024 clips a split: 64 steps an epoch, so that a run's task does not race thousands of
    epochs ahead of the driver's store (a real epoch takes seconds)."""
    return feature_data(config, n=1024)


def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray (2 CPUs) for the module; its address, for other processes to join."""
    pytest.importorskip("ray", reason="the ray backend needs requirements-ray.txt")
    info = ray_backend.connect(RayOptions(local_cpus=2))
    yield info
    ray_backend.disconnect()


def ray_manager(tmp_path: Path, name: str = "ray", **kwargs) -> JobManager:
    store = RunStore(tmp_path / f"{name}.sqlite", tmp_path / name)
    kwargs = {"ray_options": RayOptions(local_cpus=2), "data_loader": feature_data, **kwargs}
    return JobManager(store, backend="ray", **kwargs)


def test_a_ray_run_stores_what_a_local_run_stores(cluster, tmp_path: Path) -> None:
    assert cluster.nodes == 1 and cluster.cpus == 2
    config = tiny_config(epochs=3, **{"train.seed": 3})
    on_ray = ray_manager(tmp_path, checkpoint_every_s=0.0)
    local = JobManager(RunStore(tmp_path / "local.sqlite", tmp_path / "local"), data_loader=feature_data,
                       backend="local", checkpoint_every_s=0.0)
    try:
        assert on_ray.backend == "ray" and on_ray.max_concurrent == 2  # 2 CPUs, 1 per run
        a, b = on_ray.submit(config, name="r", tags=("t",)), local.submit(config, name="r", tags=("t",))
        assert on_ray.wait([a], timeout=60) and local.wait([b], timeout=60)
        ra, rb = on_ray.store.get(a), local.store.get(b)
        assert ra.status == rb.status == "finished", ra.error
        assert ra.device.startswith("cpu on ray node ") and rb.device == "cpu"
        assert on_ray.progress(a).phase == "finished" and on_ray.progress(a).epoch == 3

        def without_seconds(history):
            return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

        assert without_seconds(ra.history) == without_seconds(rb.history)  # same seed, same CPU
        assert ra.metrics == rb.metrics and ra.best_epoch == rb.best_epoch
        assert on_ray.store.step_losses(a) == local.store.step_losses(b)
        assert on_ray.store.load_predictions(a) == local.store.load_predictions(b)
        files = {p.name for p in (tmp_path / "ray" / a).iterdir()}
        assert files == {p.name for p in (tmp_path / "local" / b).iterdir()}
        assert not on_ray.store.has_checkpoint(a)
        meta_a, meta_b = on_ray.store.load_meta(a), local.store.load_meta(b)
        assert set(meta_a) == set(meta_b) and meta_a["run"]["device"] == ra.device
    finally:
        on_ray.shutdown()
        local.shutdown()


def test_features_go_to_the_object_store_once_per_key(cluster, tmp_path: Path, monkeypatch) -> None:
    import ray

    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(1) or real_put(value, **kw))
    manager = ray_manager(tmp_path)
    try:
        same = manager.submit_many([(tiny_config(epochs=1, **{"train.seed": s}), None, ()) for s in range(3)])
        other = manager.submit(tiny_config(epochs=1, **{"features.deltas": True}))
        assert manager.wait([*same, other], timeout=90)
        assert [manager.store.get(r).status for r in (*same, other)] == ["finished"] * 4
        assert len(puts) == 2  # one per (dataset, feature config): the three seeds share one
        assert len(manager._ray._refs) == 2
    finally:
        manager.shutdown()


def test_cancel_then_resume_then_cancel_by_force(cluster, tmp_path: Path) -> None:
    manager = ray_manager(tmp_path, checkpoint_every_s=0.0, data_loader=slower_data)
    try:
        run = manager.submit(tiny_config(epochs=5000))
        until(lambda: len(manager.store.get(run).history) >= 2)
        live = manager.progress(run)
        assert live.phase == "training" and live.eta is not None and live.recent_losses
        assert "on ray node" in manager.store.get(run).device
        manager.cancel(run)
        assert manager.wait([run], timeout=30)
        record = manager.store.get(run)  # no error: the task stopped by itself, not by force
        assert record.status == "cancelled" and record.error is None and 2 <= len(record.history) < 5000
        saved = manager.store.load_checkpoint(run)["epoch"]
        assert saved >= 2

        manager._ray.cancel_grace_s = 0.0  # next time: ray.cancel(force=True) at once
        manager.resume(run)
        # the store, not the live progress: a task may run up to MAX_AHEAD_EPOCHS ahead of what the driver stored
        until(lambda: manager.progress(run).phase == "training" and len(manager.store.get(run).history) > saved + 1)
        assert manager.store.get(run).history[saved]["epoch"] == saved + 1  # continued, did not start over
        manager.cancel(run)
        assert manager.wait([run], timeout=20)
        record = manager.store.get(run)
        assert record.status == "cancelled" and "by force" in record.error
        assert manager.store.has_checkpoint(run)  # resumable again
    finally:
        manager.shutdown()


def test_two_drivers_on_one_cluster_see_their_own_runs(cluster, tmp_path: Path) -> None:
    first, second = ray_manager(tmp_path, "first"), ray_manager(tmp_path, "second")
    try:
        a = first.submit(tiny_config(epochs=2))
        b = second.submit(tiny_config(epochs=2, **{"train.seed": 1}))
        assert first.wait([a], timeout=60) and second.wait([b], timeout=60)
        assert set(first.all_progress()) == {a} and set(second.all_progress()) == {b}
        assert [r.id for r in first.store.list_runs()] == [a] and [r.id for r in second.store.list_runs()] == [b]
        assert first.store.get(a).status == second.store.get(b).status == "finished"
    finally:
        first.shutdown()
        second.shutdown()


DRIVER = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from test_ray_backend import slower_data
    from helpers_jobs import tiny_config
    from engine.runs.jobs import JobManager
    from engine.runs.ray_backend import RayOptions
    from engine.runs.store import RunStore
    manager = JobManager(RunStore({db!r}, {runs!r}), data_loader=slower_data, backend="ray",
                         ray_options=RayOptions(address={address!r}), checkpoint_every_s=0.0)
    run_id = manager.submit(tiny_config(epochs=5000))
    print(run_id, flush=True)
    manager.wait([run_id])
""")


def test_a_killed_driver_leaves_its_run_interrupted_and_resumable(cluster, tmp_path: Path) -> None:
    db, runs = tmp_path / "runs.sqlite", tmp_path / "runs"
    store = RunStore(db, runs)
    code = DRIVER.format(root=str(ROOT), tests=str(ROOT / "tests"), db=str(db), runs=str(runs), address=cluster.address)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id, "the driver did not start"
        until(lambda: len(store.get(run_id).history) >= 2 and store.has_checkpoint(run_id), timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    manager = JobManager(store, data_loader=slower_data, backend="ray", ray_options=RayOptions(local_cpus=2),
                         checkpoint_every_s=0.0)
    try:
        assert manager.interrupted == [run_id] and store.get(run_id).status == "interrupted"
        saved = store.load_checkpoint(run_id)["epoch"]
        manager.resume(run_id)
        until(lambda: manager.progress(run_id).phase == "training" and manager.progress(run_id).epoch > saved + 1)
        assert store.get(run_id).status == "running" and "on ray node" in store.get(run_id).device
        manager.cancel(run_id)
        assert manager.wait([run_id], timeout=20)
        assert store.get(run_id).status == "cancelled" and store.get(run_id).history[saved]["epoch"] == saved + 1
    finally:
        manager.shutdown()


def test_cli_trains_on_ray(cluster, tmp_path: Path, monkeypatch, capsys) -> None:
    """`python -m engine train --backend ray --ray-address host:port`: a run on the cluster, in
    the CLI's store; the flags do not leak into the environment afterwards."""
    from engine import cli
    from engine.runs import jobs

    monkeypatch.setenv("MEDLEY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDLEY_BACKEND", raising=False)
    monkeypatch.setattr(jobs, "_default_loader", lambda config, device, progress: feature_data(config))
    code = cli.main(["train", "--backend", "ray", "--ray-address", cluster.address, "--epochs", "2", "--hidden", "8",
                     "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"status": "finished"' in out and "on ray node" in out
    assert "MEDLEY_BACKEND" not in os.environ and "MEDLEY_RAY_ADDRESS" not in os.environ


def test_missing_ray_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayMissing, match=r"pip install -r requirements-ray.txt \(ray==2\.60\.0\)"):
        JobManager(RunStore(tmp_path / "r.sqlite", tmp_path / "runs"), backend="ray")
    monkeypatch.setenv("MEDLEY_BACKEND", "ray")
    with pytest.raises(RayMissing):
        JobManager(RunStore(tmp_path / "r.sqlite", tmp_path / "runs"))


@pytest.mark.parametrize("value, message", [
    ("dask", "backend must be 'local'"),
])
def test_bad_backend_is_named(value: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        JobManager(RunStore(tmp_path / "r.sqlite", tmp_path / "runs"), backend=value)


def test_backend_and_options_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("MEDLEY_BACKEND", raising=False)
    assert backend_from_env() == "local" and backend_from_env("threads") == "local"
    monkeypatch.setenv("MEDLEY_BACKEND", "Ray")
    assert backend_from_env() == "ray"
    monkeypatch.setenv("MEDLEY_RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.setenv("MEDLEY_RAY_GPUS", "0.25")
    options = RayOptions.from_env(cpus_per_run=2)
    assert (options.address, options.cpus_per_run, options.gpus_per_run, options.device) == \
        ("10.0.0.5:6379", 2, 0.25, "cuda")
    assert RayOptions.from_json(options.to_json()) == options and options.sends_code()
    assert not RayOptions().sends_code()
    monkeypatch.setenv("MEDLEY_RAY_CPUS", "two")
    with pytest.raises(ConfigError, match=r"\$MEDLEY_RAY_CPUS must be a number, not 'two'"):
        RayOptions.from_env()


@pytest.mark.parametrize("values, message", [
    ({"address": "nohost"}, "host:port"),
    ({"address": "h:99999"}, "host:port"),
    ({"cpus_per_run": 0}, "CPUs per run must be > 0"),
    ({"gpus_per_run": -1}, "GPUs per run must be >= 0"),
    ({"gpus_per_run": 1.5}, "above 1 must be whole"),
    ({"local_cpus": 0}, "at least 1"),
])
def test_bad_ray_options_are_named(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RayOptions(**values)


def apply(at) -> None:
    """Press the home page's backend form button."""
    [button] = [b for b in at.button if b.label == "Apply"]
    button.click().run()


@pytest.fixture
def home_page(tiny_dataset: Path, medley_cache: Path, monkeypatch):
    """An AppTest of the home page on the tiny data, with a fresh job manager and backend
    setting; the manager it makes is shut down afterwards. Yields (AppTest, ui.common)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from ui import common

    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.delenv("MEDLEY_BACKEND", raising=False)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(common, "_BACKEND", {})
    st.cache_resource.clear()
    try:
        yield AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120), common
    finally:
        with contextlib.suppress(Exception):
            common.get_manager().shutdown()
        st.cache_resource.clear()


def test_home_page_switches_to_ray_and_shows_the_cluster(cluster, home_page) -> None:
    """The home page's 'Where runs train' setting: Ray at the cluster's address, its resources
    shown; a bad address is refused with a message and nothing changes; back to local."""
    at, common = home_page
    at.run()
    assert not at.exception
    assert at.expander[0].label.startswith("Where runs train: this machine")
    [address] = [t for t in at.text_input if t.label == "Ray address"]
    at.radio[0].set_value("on a Ray cluster")
    address.set_value("nohost")
    apply(at)
    assert not at.exception
    assert any("Not switched" in e.value and "host:port" in e.value for e in at.error)
    assert common.get_manager().backend == "local"

    [address] = [t for t in at.text_input if t.label == "Ray address"]
    address.set_value(cluster.address)
    at.radio[0].set_value("on a Ray cluster")
    apply(at)
    assert not at.exception
    label = at.expander[0].label
    assert "Ray cluster: 1 node, 2 CPUs, 0 GPUs" in label and "2 at once" in label, label
    assert common.get_manager().backend == "ray"

    at.radio[0].set_value("on this machine")
    apply(at)
    assert not at.exception and at.expander[0].label.startswith("Where runs train: this machine")


@pytest.fixture
def on_the_cluster(cluster, monkeypatch):
    """The environment a dashboard server started now reads: the ray backend at the cluster."""
    monkeypatch.setenv("MEDLEY_BACKEND", "ray")
    monkeypatch.setenv("MEDLEY_RAY_ADDRESS", cluster.address)
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a crash of the server leaves its stack in server.log


def test_a_ray_run_in_a_real_browser(on_the_cluster, server, tmp_path: Path) -> None:
    """`MEDLEY_BACKEND=ray streamlit run dashboard.py`: the home page shows the cluster; a run
    started on the Train page trains on Ray with its live curve; Cancel and Resume work."""
    from test_e2e_browser import CHROMIUM, CHROMIUM_ARGS, HEIGHT, LOAD_MS, WIDTH, assert_no_exception, \
        open_page, screenshot, set_number, stored, wait_idle

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    base, log_path = server
    db = tmp_path / "cache" / "runs.sqlite"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": HEIGHT})
        context.set_default_timeout(LOAD_MS)
        page = context.new_page()
        try:
            open_page(page, base, "/", "Medley-solos-DB LSTM lab")
            page.get_by_text(re.compile(r"Where runs train: Ray cluster: 1 node, 2 CPUs")).first.wait_for()

            open_page(page, base, "/Train", "Train")
            set_number(page, "LSTM units", "8")
            set_number(page, "epochs", "3000")
            page.get_by_role("button", name="Start training").click()
            from helpers_browser import wait_for_run_in_url

            run_id = wait_for_run_in_url(page, LOAD_MS)  # ?run=name+(id): the Run selectbox's label
            # The live curve: a chart while the run trains, drawn from the epochs the driver stored.
            page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=150_000)
            assert stored(db, run_id, "status") == "running"
            assert "on ray node" in stored(db, run_id, "device")
            assert_no_exception(page, "/Train live")
            screenshot(page, "ray_train_live")

            page.get_by_role("button", name="Cancel run").click()
            page.get_by_text(re.compile(r"cancelled\*\* after|cancelled after")).first.wait_for(timeout=60_000)
            wait_idle(page)
            done, epochs = stored(db, run_id, "status, json_array_length(history)")
            assert done == "cancelled", done
            page.get_by_role("button", name=re.compile(r"Resume from epoch \d+")).click()
            until(lambda: stored(db, run_id, "status, json_array_length(history) > ?".replace("?", str(epochs + 1)))
                  == ("running", 1), timeout=150)
            page.get_by_text(re.compile(r"epoch \d+/3000")).first.wait_for(timeout=60_000)  # the live line
            page.get_by_role("button", name="Cancel run").click()
            page.get_by_text(re.compile(r"cancelled\*\* after|cancelled after")).first.wait_for(timeout=60_000)
            assert_no_exception(page, "/Train resumed")
        except Exception:
            with contextlib.suppress(Exception):
                screenshot(page, "ray_failure")
            print(f"--- server log ---\n{log_path.read_text()[-4000:]}")
            raise
        finally:
            context.close()


def test_an_unreachable_cluster_message_names_the_token_settings() -> None:
    """Ray reports a refused token only in its log, so the message always names the settings."""
    hint = ray_backend._hint("10.0.0.5:6379")
    assert "RAY_AUTH_MODE=token" in hint and "~/.ray/auth_token" in hint and "ray start --head" in hint
    assert ray_backend._hint("local") == ""


def test_a_bad_ray_setting_leaves_the_dashboard_on_this_machine_with_the_reason(home_page,
                                                                                monkeypatch) -> None:
    at, common = home_page
    monkeypatch.setenv("MEDLEY_BACKEND", "ray")
    monkeypatch.setenv("MEDLEY_RAY_ADDRESS", "not-an-address")
    at.run()
    assert not at.exception
    assert any("Runs train on this machine" in w.value and "host:port" in w.value for w in at.warning)
    assert at.expander[0].label.startswith("Where runs train: this machine")
    assert common.get_manager().backend == "local"
