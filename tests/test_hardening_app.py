"""Hardening of the dashboard (issue 13): bad settings, a damaged run store and user text
never reach the browser as a traceback or as markup. AppTest, each test in its own cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from test_app_pages import _shutdown_manager, train_page_on
from test_app_pages import app_env as pages_env  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
PAGES = ("pages/1_Dataset.py", "pages/2_Train.py", "pages/3_Compare.py", "pages/4_Predict.py")


@pytest.fixture
def app_env(pages_env: Path):
    """test_app_pages' environment (tiny dataset, empty cache, fresh Streamlit caches), and
    any job manager a page started is shut down afterwards."""
    yield pages_env
    _shutdown_manager()


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
    from engine.data.dataset import demo_size

    assert demo_size("demo: tiny") == "tiny"


# ---- 2. a damaged run store -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["header", "truncate"])
def test_damaged_store_shows_one_message_on_every_page_and_the_button_rebuilds(app_env, medley_cache, how):
    from test_hardening_store import _damage, _filled_store

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


# ---- 4. user text is plain text; CSV cells are not formulas -----------------------------------

EVIL = "![x](http://evil.example/p.png) **bold** :red[red] <img src=x>"


def _unescaped_markup(text: str) -> list[str]:
    """Markdown-active characters of `text` not preceded by a backslash."""
    import re

    cleaned = re.sub(r"\\.", "", text)
    return [c for c in "[]<>`" if c in cleaned]  # links, images, HTML, code (the page's own ** is fine)


def test_plain_escapes_every_markdown_character():
    from ui.common import plain

    out = plain(EVIL + "\nnext line")
    assert _unescaped_markup(out) == [] and "\n" not in out
    assert "\\*\\*bold\\*\\*" in out  # no emphasis either
    assert out.replace("\\", "") == (EVIL + " next line").replace("\\", "")  # the text itself is kept


def test_train_page_shows_a_run_name_as_text(app_env, medley_cache):
    from test_hardening_store import _filled_store

    _filled_store(medley_cache, n=1)
    from engine.runs.store import RunStore

    store = RunStore()
    run_id = store.list_runs(status="finished")[0].id
    store.rename(run_id, EVIL)
    at = train_page_on(run_id)
    assert not at.exception, at.exception
    import re

    headings = [m.value for m in at.markdown if m.value.startswith("### ") and "evil" in m.value]
    assert headings, [m.value for m in at.markdown]
    # the page's own colour dot is HTML; the name in its title attribute is quoted and escaped
    dot = re.compile(r'<span class="run-swatch" title="[^"]*" style="color:#[0-9a-fA-F]{6}">&#9679;</span>')
    assert all(dot.search(h) for h in headings), headings
    assert all(_unescaped_markup(dot.sub("", h)) == [] for h in headings), headings


def test_csv_download_cells_are_not_formulas():
    import pandas as pd

    from ui.common import csv_bytes

    frame = pd.DataFrame({"name": ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "ok"], "acc": [0.5, -0.1, 1, 2, 3]})
    lines = csv_bytes(frame).decode().splitlines()[1:]
    assert [line.split(",")[0] for line in lines[1:4]] == ["'+1", "'-2", "'@SUM(A1)"]
    assert lines[0].startswith("\"'=HYPERLINK") and lines[4] == "ok,3.0"
    assert lines[1].endswith(",-0.1")  # numbers are left alone


def test_a_crafted_link_cannot_put_markup_on_the_page(app_env):
    """?data=... and ?run=... come from links anyone can send; they show as text."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.query_params["data"] = "/nowhere/" + EVIL
    at.run()
    assert not at.exception, at.exception
    shown = [e.value for e in at.error] + [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert any("evil" in s for s in shown), shown
    assert all(_unescaped_markup(s) == [] for s in shown if "evil" in s), [s for s in shown if "evil" in s]
    at.switch_page("pages/2_Train.py")
    at.query_params["run"] = EVIL
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error if "evil" in e.value]
    assert errors and all(_unescaped_markup(e) == [] for e in errors), errors
