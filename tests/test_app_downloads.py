"""Downloads in the dashboard (AppTest): the Train page offers a finished run's model bundle
and history, the Compare page the per-epoch history of the runs shown; the files are the
engine's (tests/test_export.py checks their contents)."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120


@pytest.fixture
def finished_run(tiny_dataset: Path, medley_cache: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A finished tiny run in the test's store (the dashboard's store: $MEDLEY_CACHE)."""
    from engine.runs.store import RunStore
    from engine.learn.train import train_run

    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    config = tiny_config(epochs=2)
    store = RunStore()
    run_id = store.create_run(config, name="downloadable", status="running", tags=("a", "b"))
    store.save_result(run_id, train_run(config, synthetic_data(config), device="cpu"))
    store.close()
    yield run_id
    st.cache_resource.clear()
    st.cache_data.clear()


def labels(at: AppTest) -> list[str]:
    return [element.proto.label for element in at.get("download_button")]


def test_the_train_page_offers_the_model_and_its_history(finished_run: str) -> None:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/2_Train.py")
    at.query_params["run"] = finished_run
    at.run()
    assert not at.exception, at.exception
    assert "Download model + config (zip)" in labels(at)
    assert "Download per-epoch history (CSV)" in labels(at)


def test_the_compare_page_offers_the_history_of_the_runs_shown(finished_run: str) -> None:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/3_Compare.py").run()
    assert not at.exception, at.exception
    assert "Download per-epoch history of this run (CSV)" in labels(at)
    assert "Download this table (CSV)" in labels(at)


def test_a_model_that_vanished_gives_a_zip_that_says_so() -> None:
    from engine.core.errors import StoreError
    from ui.downloads import _or_error_zip

    def gone() -> bytes:
        raise StoreError("run 'r-1' has no saved model")

    with zipfile.ZipFile(io.BytesIO(_or_error_zip(gone)())) as zf:
        assert zf.namelist() == ["ERROR.txt"] and "no saved model" in zf.read("ERROR.txt").decode()
