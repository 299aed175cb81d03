"""Hardening of the dashboard (issue 13): bad settings, a damaged run store and user text
never reach the browser as a traceback or as markup. AppTest, each test in its own cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
PAGES = ("pages/1_Dataset.py", "pages/2_Train.py", "pages/3_Compare.py", "pages/4_Predict.py")


@pytest.fixture
def app_env(tiny_dataset: Path, medley_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """Tiny dataset as MEDLEY_DATA, empty cache, fresh Streamlit caches."""
    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tiny_dataset
    _shutdown_manager()
    st.cache_resource.clear()
    st.cache_data.clear()


def _shutdown_manager() -> None:
    from ui import common

    try:
        common.get_manager().shutdown()
    except Exception:
        pass


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.run()
    return at


def _errors(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in at.error)


# ---- 1. a malformed dataset setting -----------------------------------------------------------


@pytest.mark.parametrize("bad", ["demo:small", "demo:tinyy"])
def test_bad_dataset_setting_from_env_leaves_every_page_usable(app_env, monkeypatch, bad):
    monkeypatch.setenv("MEDLEY_DATA", bad)
    at = _app()
    assert not at.exception, at.exception
    assert "unknown demo size" in _errors(at)
    assert any(f.label == "Dataset folder" for f in at.text_input)  # the form to fix it is drawn
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert "unknown demo size" in _errors(at), page


def test_typing_a_bad_dataset_setting_shows_an_error_and_keeps_the_old_one(app_env):
    at = _app()
    field = next(f for f in at.text_input if f.label == "Dataset folder")
    field.set_value("demo:small")
    next(b for b in at.button if b.label == "Use this dataset").click().run()
    assert not at.exception, at.exception
    assert "Not switched" in _errors(at) and "demo:small" in _errors(at)
    assert at.session_state["data_setting"] == ""  # still the working default
    assert "data" not in at.query_params


def test_demo_size_tolerates_spaces():
    from engine.dataset import demo_size

    assert demo_size("demo: tiny") == "tiny"


# ---- 2. a damaged run store -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "truncate"])
def test_damaged_store_shows_one_message_on_every_page_and_the_button_rebuilds(app_env, medley_cache, how):
    from tests.test_hardening_store import _damage, _filled_store

    names = _filled_store(medley_cache, n=2)
    _damage(medley_cache / "runs.sqlite", how)
    at = _app()
    assert not at.exception, at.exception
    assert "--rebuild" in _errors(at)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert "run store cannot be read" in _errors(at), page
    at.switch_page("dashboard.py").run()
    at.button(key="rebuild_store").click().run()
    assert not at.exception, at.exception
    assert not at.error, _errors(at)
    assert any("2 run(s) recovered" in s.value for s in at.success)
    from ui.common import get_store

    assert {r.id for r in get_store().list_runs()} >= set(names)
