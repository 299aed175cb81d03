"""The dashboard's side of #33: a run that failed for a fault the store could not record (a
full disk) shows as failed, with its reason and Resume, never as still running."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_faults import Faults  # noqa: E402
from test_app_pages import app_env, train_page_on  # noqa: E402,F401  (app_env: tiny dataset, empty cache, fresh Streamlit caches)

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_failed_for_a_full_store_shows_its_reason_and_resume(app_env, monkeypatch):
    from engine.core.config import RunConfig
    from engine.core.space import disk_full_error
    from engine.runs.liveness import _fail_active
    from ui.common import get_store

    store = get_store()
    run_id = store.create_run(RunConfig(), name="hit a full disk")
    store.set_status(run_id, "running")
    faults = Faults("store").install(monkeypatch)
    faults.armed = True
    message = str(disk_full_error(store.runs_dir / run_id, "saving the model", 12_500_000))
    assert _fail_active(store, [run_id], message) == {run_id: message}  # the database did not take it
    faults.active = False
    assert store.stored_status(run_id) == "running"

    at = train_page_on(run_id)
    assert not at.exception, at.exception
    assert any("no space left on the disk holding" in e.value and "then Resume" in e.value for e in at.error)
    assert any(b.label.startswith("Resume") for b in at.button), [b.label for b in at.button]
    assert not any(b.label == "Cancel run" for b in at.button)  # not shown as a live run


def test_the_home_page_shows_the_store_size_and_the_free_space(app_env):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    [line] = [c.value for c in at.caption if c.value.startswith("Run store:")]
    assert " on disk" in line and " free on its disk" in line


def test_the_runs_table_shows_each_runs_size(app_env):
    from engine.core.config import RunConfig
    from engine.core.space import format_bytes
    from ui.common import get_store

    store = get_store()
    run_id = store.create_run(RunConfig(), name="sized")
    (store.run_dir(run_id) / "model.pt").write_bytes(b"\0" * 2_500_000)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/3_Compare.py").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "size (MB)" in d.value.columns)
    assert table["size (MB)"].tolist() == [2.5]
    total = get_store().total_bytes()  # the run's 2.5 MB and the database
    assert 2_500_000 < total < 4_000_000
    assert any(c.value.startswith(f"Run store: {format_bytes(total)} on disk") for c in at.caption)
