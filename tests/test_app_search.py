"""The Search page (pages/5_Search.py) in Streamlit's AppTest: no search yet, a finished search
(charts, trials, importance), a bad space typed into the form, and a confirmation's verdict."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.core.search_space import parse_space
from engine.runs.jobs import JobManager
from engine.runs.search import SearchSpec, start_search
from engine.runs.store import RunStore
from helpers_jobs import synthetic_data, tiny_config

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Search.py")
TIMEOUT = 120


@pytest.fixture
def app(medley_cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    _stop_background()
    st.cache_resource.clear()
    st.cache_data.clear()


def _stop_background() -> None:
    """Stop this test's searches and the server's job manager (its worker processes) before the caches go."""
    from ui import common
    from ui import search_view as sv

    jobs = sv.get_search_jobs()
    for name in list(jobs.searches):
        jobs.stop(name)
    for job in [*jobs.searches.values(), *jobs.confirms.values()]:
        job.thread.join(30)
    common.get_manager().shutdown()


def texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "caption", "info", "error", "text") for e in getattr(at, kind))


def finished_search(name: str = "s1") -> None:
    """A 4-trial search on synthetic features, stored in the test's cache."""
    manager = JobManager(RunStore(), data_loader=synthetic_data)
    try:
        space = parse_space({"train.lr": {"low": 3e-3, "high": 3e-2, "log": True}, "model.hidden_size": [4, 8]})
        start_search(SearchSpec(name, space, tiny_config(epochs=2), trials=4, pruner="none"), manager).run()
    finally:
        manager.shutdown()


def test_page_without_searches_says_what_to_do(app) -> None:
    at = app.run()
    assert not at.exception
    assert "No search yet" in texts(at)


def test_page_shows_a_finished_search(app) -> None:
    finished_search()
    at = app.run()
    assert not at.exception, at.exception
    assert "Best so far" in texts(at) and at.selectbox(key="search_name").value == "s1"
    assert len(at.get("vega_lite_chart")) >= 3  # best so far, trials over time, parallel coordinates
    assert at.dataframe and len(at.dataframe[0].value) == 4


def test_a_bad_space_in_the_form_is_an_error_not_a_crash(app) -> None:
    at = app.run()
    at.text_area[0].set_value('{"train.lr": {"low": 1, "high": 0.1}}')
    at.button[0].click()  # the form's submit button
    at.run()
    assert not at.exception
    assert "must be below high" in texts(at)


def test_a_confirmation_verdict_is_shown_decision_first(app) -> None:
    from ui import search_view as sv

    finished_search()
    at = app.run()
    jobs = sv.get_search_jobs()
    verdict = {"decision": "no configuration is better than the preset beyond the seed spread: keep the preset",
               "method": "seed-level two-level t-test, Holm", "split": "validation", "alpha": 0.05, "note": None,
               "seeds": [1, 2], "search_seeds": [0],
               "comparisons": [{"row": "trial 1", "difference": 0.01, "ci": [-0.1, 0.12], "effect_size": 0.2,
                                "p_value": 0.7, "p_adjusted": 1.0, "significant": False, "words": "trial 1: +1.0 points"}],
               "after_decision": {"label": "test accuracy, read after the decision (never used to choose)",
                                  "test": {"preset": {"mean": 0.5, "std": 0.01, "runs": 2}}}}
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    jobs.confirms["s1"] = sv._Job(done, result=verdict)
    at.run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "keep the preset" in shown and shown.index("Decision") < shown.index("Test accuracy, read after")


def test_the_form_starts_a_real_search_and_the_button_confirms_it(app, tiny_dataset: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's own path: the form starts a search on the server's job manager (worker
    processes, the real 72-clip dataset), then Confirm trains the best trial and the preset
    with 2 fresh seeds each and shows the decision."""
    import time

    from ui import search_view as sv

    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    at = app.run()
    at.text_input[0].set_value("live1")
    at.number_input[0].set_value(2)  # trials
    at.number_input[1].set_value(1)  # epochs per trial
    at.text_area[0].set_value('{"train.lr": [0.001, 0.01]}')
    at.button[0].click()
    at.run()
    assert not at.exception, at.exception
    jobs = sv.get_search_jobs()
    deadline = time.monotonic() + 90
    while jobs.running("live1") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not jobs.running("live1") and jobs.searches["live1"].error is None
    at.run()
    assert "Best so far" in texts(at) and "2/2 trials" in str(at.get("progress")[0].proto)
    at.number_input[2].set_value(1)  # top configurations
    at.number_input[3].set_value(2)  # fresh seeds each
    at.button(key="confirm_button").click()
    at.run()
    assert not at.exception, at.exception
    deadline = time.monotonic() + 90
    while jobs.confirms["live1"].running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.confirms["live1"].error is None
    at.run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert "Decision" in shown and "fresh seeds [1, 2]" in shown
