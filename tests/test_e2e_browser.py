"""End to end in a real browser: headless Chromium (Playwright) drives `streamlit run dashboard.py`.

A fresh server on a free loopback port, with an empty cache ($MEDLEY_CACHE) and the tiny
synthetic dataset ($MEDLEY_DATA). The test first opens every page by its own URL (deep links
on a fresh server), then trains two tiny runs from the Train page's widgets, compares them on
/Compare?runs=a,b and classifies an uploaded WAV (plus a garbage file) on /Predict. A full-page
screenshot of every page goes to tests/artifacts/. Skipped only when /usr/bin/chromium is missing.

The README's page images (docs/images) come from those screenshots, by one command:
`python -m pytest tests/test_e2e_browser.py -k every_page --update-screenshots`.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import soundfile as sf

from conftest import synth_clip, write_tiny_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helpers_browser  # noqa: E402
from helpers_browser import CHROMIUM, CHROMIUM_ARGS, ServerDidNotStart, start_server, stop_server  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PAGES = [  # (path, title) in the order they are deep-linked on the fresh server
    ("/Dataset", "Dataset"),
    ("/Train", "Train"),
    ("/Compare", "Compare runs"),
    ("/Predict", "Predict"),
    ("/Search", "Search"),
    ("/", "Medley-solos-DB LSTM lab"),
]
WIDTH, HEIGHT = 1400, 900
NARROW = 390  # a phone's width: the pages must stack, nothing cut or overlapping
LOAD_MS = 90_000  # first page loads import torch and read the dataset on a slow shared machine
TRAIN_MS = 150_000  # one tiny run (features of 72 clips, then 2 epochs)


def wav_buffer(seconds: float, label: int, sr: int = 44100) -> bytes:
    buffer = io.BytesIO()
    y = synth_clip(label, np.random.default_rng(label), samples=int(seconds * sr), sr=sr)
    sf.write(buffer, y, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path):
    """Base URL of a fresh `streamlit run dashboard.py` (its process group is killed afterwards)."""
    data = write_tiny_dataset(tmp_path / "data", per_class=2)
    cache = tmp_path / "cache"
    cache.mkdir()
    log_path = tmp_path / "server.log"
    try:
        proc, base = start_server(cache, data, log_path, timeout_s=60)
    except ServerDidNotStart as exc:
        pytest.fail(str(exc))
    try:
        yield base, log_path
    finally:
        stop_server(proc)


# ---- page helpers -------------------------------------------------------------------------


@contextlib.contextmanager
def browser(tmp_path: Path):
    """(context, page) of a headless Chromium with its own profile, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": WIDTH, "height": HEIGHT},
        )
        context.set_default_timeout(LOAD_MS)
        try:
            yield context, context.new_page()
        finally:
            context.close()


def wait_idle(page, timeout: int = LOAD_MS) -> None:
    """Wait until the script run (not a timer fragment) is done."""
    helpers_browser.wait_idle(page, timeout)


def open_page(page, base: str, path: str, title: str) -> None:
    page.goto(base + path, wait_until="domcontentloaded")
    page.locator("h1", has_text=title).first.wait_for(timeout=LOAD_MS)
    wait_idle(page)
    assert_no_exception(page, path)


def assert_no_exception(page, where: str) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"{where}: exception box: {boxes.first.inner_text()[:2000]}"
    body = page.inner_text("body")
    assert "Traceback" not in body, f"{where}: a traceback is shown"


def assert_sidebar_lists_the_pages(page, where: str) -> None:
    """The sidebar's page list, in order, the home page named "Home" (not after its file)."""
    nav = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]')
    labels = [text.strip() for text in nav.all_inner_texts()]
    assert labels == ["Home", "Dataset", "Train", "Compare", "Predict", "Search"], f"{where}: sidebar lists {labels}"
    assert "dashboard" not in page.locator('[data-testid="stSidebar"]').inner_text(), where


def screenshot(page, name: str, width: int = WIDTH) -> Path:
    """Full-page screenshot `width` px wide: the viewport is grown to the app's scroll height
    first (Streamlit scrolls inside its own container, so a plain full_page shot would stop at
    the fold)."""
    ARTIFACTS.mkdir(exist_ok=True)
    if width != WIDTH:
        page.set_viewport_size({"width": width, "height": HEIGHT})
        page.wait_for_timeout(1500)
    height = page.evaluate(
        """() => Math.max(document.body.scrollHeight, ...Array.from(document.querySelectorAll(
            '[data-testid="stMain"], [data-testid="stAppViewContainer"], [data-testid="stMainBlockContainer"]'
        )).map(e => e.scrollHeight))"""
    )
    page.set_viewport_size({"width": width, "height": int(min(max(height + 60, HEIGHT), 12000))})
    page.wait_for_timeout(1500)  # Vega charts re-render after the resize
    wait_idle(page)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    return path


def set_number(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    wait_idle(page)


def start_tiny_run(page, base: str, name: str, hidden: str) -> str:
    """Start a 2-epoch run with a small hidden size from the Train page's widgets; its id."""
    open_page(page, base, "/Train", "Train")
    set_number(page, "LSTM units", hidden)
    set_number(page, "epochs", "2")
    run_name = page.get_by_label("Run name", exact=True)
    run_name.fill(name)
    run_name.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Start training").click()
    return helpers_browser.wait_for_run_in_url(page, LOAD_MS)


def wait_finished(page, base: str, run_id: str) -> None:
    """Open the run on the Train page and wait until its results are shown."""
    open_page(page, base, f"/Train?run={run_id}", "Train")
    page.get_by_text(re.compile(r"finished after \d+ epoch")).first.wait_for(timeout=TRAIN_MS)
    wait_idle(page)
    assert_no_exception(page, f"/Train?run={run_id}")


def stored(db: Path, run_id: str, columns: str):
    """Columns of the run's row in the server's store (None when the row is gone)."""
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        row = con.execute(f"SELECT {columns} FROM runs WHERE id=?", (run_id,)).fetchone()
    finally:
        con.close()
    return row if row is None or len(row) > 1 else row[0]


def swatch_color(page, title: str) -> str:
    """Computed colour of the run's colour dot (ui.colors.swatch) titled `title`."""
    dot = page.locator(f'span.run-swatch[title="{title}"]').first
    dot.wait_for()
    return dot.evaluate("e => getComputedStyle(e).color")


# ---- the test -----------------------------------------------------------------------------


LOG_ERRORS = ("Traceback (most recent call last)", "ArrowTypeError", "ArrowInvalid")


def log_errors(text: str) -> list[str]:
    """The lines of a server log that show an error: a traceback, or an Arrow conversion
    Streamlit caught and logged (a table with two types in one column)."""
    return [line for line in text.splitlines() if any(mark in line for mark in LOG_ERRORS)]


def assert_clean_log(log_path: Path) -> None:
    found = log_errors(log_path.read_text(errors="replace"))
    assert not found, "the server logged errors:\n" + "\n".join(found[:10])


def test_log_errors_finds_tracebacks_and_arrow_errors():
    assert log_errors("ok\nTraceback (most recent call last):\n  x\npyarrow.lib.ArrowTypeError: Expected bytes") == [
        "Traceback (most recent call last):", "pyarrow.lib.ArrowTypeError: Expected bytes"]
    assert log_errors("  You can now view your Streamlit app in your browser.") == []


def test_readme_images_are_the_first_screens_small(tmp_path: Path):
    from PIL import Image, ImageDraw

    for shot in helpers_browser.README_SHOTS.values():  # a tall page of text and coloured boxes
        page = Image.new("RGB", (1400, 3000), "white")
        draw = ImageDraw.Draw(page)
        for row in range(0, 3000, 18):
            draw.text((40 + row % 300, row), f"row {row}: accuracy 42.{row % 10}% " * 6, fill=(30, 30, 60))
            draw.rectangle((900, row, 900 + row % 400, row + 10), fill=(row % 255, 114, 178))
        page.save(tmp_path / f"{shot}.png")
    written = helpers_browser.publish_screenshots(tmp_path, tmp_path / "images")
    assert sorted(p.name for p in written) == ["compare.png", "dataset.png", "home.png", "predict.png", "train.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.size == (640, 576)  # the first 1400 x 1260 px, scaled
        assert path.stat().st_size <= helpers_browser.MAX_IMAGE_BYTES


def test_every_page_in_a_real_browser(server, tmp_path: Path, pytestconfig):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    base, log_path = server
    db = tmp_path / "cache" / "runs.sqlite"
    t0 = time.monotonic()

    def step(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s  {what}")
    with browser(tmp_path) as (context, page):
        try:
            # 1. Deep links on the fresh server: every page by its own URL, home last.
            for path, title in PAGES:
                open_page(page, base, path, title)
                screenshot(page, "0_home" if path == "/" else f"1_{path.strip('/').lower()}_empty")
                assert_sidebar_lists_the_pages(page, path)
                step(f"opened {path}")

            # 2. Two tiny runs from the Train page's widgets (both started, then awaited).
            first = start_tiny_run(page, base, "e2e hidden 8", "8")
            # the first run on an empty store reaches ?run= too (a reload right after Start shows it)
            page.wait_for_function("() => new URLSearchParams(location.search).has('run')", timeout=15_000)
            assert helpers_browser.run_in_url(page.url) == first
            second = start_tiny_run(page, base, "e2e hidden 16", "16")
            step("runs started")
            wait_finished(page, base, first)
            screenshot(page, "2_train_result")
            screenshot(page, "2_train_result_390", width=NARROW)
            wait_finished(page, base, second)
            step("runs finished")

            # 3. Rename and tag the first run on its Train page; note its colour.
            open_page(page, base, f"/Train?run={first}", "Train")
            page.get_by_text("Name, tags, notes · delete").first.click()
            page.get_by_label("Name", exact=True).fill("e2e renamed")
            page.get_by_label("Tags (comma-separated)", exact=True).fill("e2e, small one")
            page.get_by_role("button", name="Save name, tags and notes").click()
            page.get_by_text("Run e2e renamed").first.wait_for()
            wait_idle(page)
            assert_no_exception(page, "/Train rename")
            assert stored(db, first, "name, tags") == ("e2e renamed", '["e2e", "small one"]')
            train_color = swatch_color(page, "e2e renamed")
            step("renamed and tagged")

            # 4. Compare them from a shared link: the renamed run has the same colour here.
            open_page(page, base, f"/Compare?runs={first},{second}", "Compare runs")
            page.get_by_text("Side by side").first.wait_for()
            page.get_by_text("Is the difference real?").first.wait_for()
            assert "e2e renamed" in page.inner_text("body") and "e2e hidden 16" in page.inner_text("body")
            assert swatch_color(page, "e2e renamed") == train_color
            assert swatch_color(page, "e2e hidden 16") != train_color
            assert_no_exception(page, "/Compare")
            screenshot(page, "3_compare")
            screenshot(page, "3_compare_390", width=NARROW)
            step("compared")

            # 3b. The clips that flip between the two runs, on the test split, each playable (in their tab:
            # the page opens on the chosen runs' curves, confusion and verdict; the rest is in tabs).
            page.get_by_role("tab", name="Clips that flip").first.click()
            wait_idle(page)
            page.locator("h3", has_text="Clips that flip").first.wait_for()
            page.locator('[data-testid="stRadio"]', has_text="Split").filter(has_text="validation").last \
                .get_by_text("test", exact=True).click()
            wait_idle(page)
            summary = page.get_by_text(re.compile(r"On \d+ test clips, B fixed")).first
            summary.wait_for()
            counts = [int(n) for n in re.findall(r"(?:fixed|broke) (\d+)", summary.inner_text())]
            step(f"flips: fixed/broken {counts}")
            flipped = page.locator('[data-testid="stExpander"]', has_text="· true ")
            if flipped.count():  # two near-chance tiny models: flips are almost certain, not guaranteed
                flipped.first.click()
                flipped.first.locator("audio").first.wait_for(state="attached")
            page.get_by_text("Agreement between runs").first.wait_for()
            assert_no_exception(page, "/Compare flips")
            screenshot(page, "3_compare_flips")

            # 5. Predict: a 7-second WAV and a file that is not audio, with the first run.
            open_page(page, base, f"/Predict?run={first}", "Predict")
            page.locator('[data-testid="stFileUploaderDropzoneInput"], input[type="file"]').first.set_input_files([
                {"name": "violin-7s.wav", "mimeType": "audio/wav", "buffer": wav_buffer(7.0, label=7)},
                {"name": "garbage.wav", "mimeType": "audio/wav", "buffer": b"not audio at all " * 64},
            ])
            metric = page.locator('[data-testid="stMetric"]', has_text="Predicted instrument").first
            metric.wait_for(timeout=LOAD_MS)
            wait_idle(page)
            predicted = metric.inner_text()
            assert any(name in predicted for name in ("clarinet", "guitar", "singer", "flute", "piano",
                                                      "saxophone", "trumpet", "violin")), predicted
            page.get_by_text("Window by window").first.wait_for()
            page.locator('[data-testid="stAlertContentError"]', has_text="garbage.wav").first.wait_for()
            assert_no_exception(page, "/Predict")
            screenshot(page, "4_predict")
            screenshot(page, "4_predict_390", width=NARROW)
            step("predicted")

            # 5b. One dataset clip through both runs (the Compare selection is the default).
            page.get_by_text("Dataset clip", exact=True).click()
            wait_idle(page)
            panel = page.get_by_text(re.compile(r": 2 models")).first
            panel.wait_for(timeout=LOAD_MS)
            body = page.inner_text("body")
            assert re.search(r"All 2 models say|\d of 2 models say|The 2 models disagree", body), body[-2000:]
            assert re.search(r"The true label is \w[^:]*: [012] of 2 models are right", body), body[-2000:]
            assert_no_exception(page, "/Predict many")
            screenshot(page, "4_predict_many")
            step("one clip through both runs")

            # 6. Delete the second run from its Train page (after a confirmation).
            open_page(page, base, f"/Train?run={second}", "Train")
            page.get_by_text("Name, tags, notes · delete").first.click()
            delete = page.get_by_role("button", name="Delete run")
            assert delete.is_disabled()  # not before the confirmation
            sure = page.locator('[data-testid="stCheckbox"] label', has_text="Yes, delete this run").first
            for _ in range(3):  # a click that lands while the page reruns can be lost on a loaded machine
                sure.click()
                wait_idle(page)
                if delete.is_enabled():
                    break
            delete.click()
            page.get_by_text("Deleted run e2e hidden 16").first.wait_for()
            assert re.search(r"Deleted run e2e hidden 16: [\d.]+ (?:B|kB|MB|GB) freed", page.inner_text("body")), "no size freed"
            assert_no_exception(page, "/Train delete")
            assert stored(db, second, "name") is None
            step("deleted")
            assert_clean_log(log_path)  # no traceback logged anywhere along the walk (e.g. an ArrowTypeError)
            if pytestconfig.getoption("--update-screenshots"):  # the README's images, from this walk
                step(f"wrote {', '.join(p.name for p in helpers_browser.publish_screenshots(ARTIFACTS))}")
        except Exception:
            try:
                screenshot(page, "failure")
            except Exception:
                pass
            print(f"--- server log ---\n{log_path.read_text()[-4000:]}")
            raise


def test_reload_keeps_train_form_edits_and_dataset_selections(server, tmp_path: Path):
    """Issue 16: a browser reload restores the Train form's edits and the Dataset page's choices
    (they live in the URL), and editing them adds no history entries (Back leaves the page)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    base, log_path = server
    with browser(tmp_path) as (context, page):
        try:
            open_page(page, base, "/Train", "Train")
            history = page.evaluate("history.length")
            set_number(page, "learning rate", "3.0e-03")
            set_number(page, "LSTM units", "64")
            page.get_by_text("More settings", exact=True).click()  # the less-used inputs wait there
            page.get_by_text("Add pitch classes (12 chroma values)", exact=True).click()
            wait_idle(page)
            assert page.evaluate("history.length") == history  # edits replace the entry, never push one
            assert parse_qs(urlparse(page.url).query)["w.model.hidden_size"] == ["64"]
            page.reload()
            page.locator("h1", has_text="Train").first.wait_for()
            wait_idle(page)
            assert page.get_by_label("learning rate", exact=True).input_value() == "3.0e-3"
            assert page.get_by_label("LSTM units", exact=True).input_value() == "64"
            assert page.get_by_label("Add pitch classes (12 chroma values)", exact=True).is_checked()
            assert page.get_by_label("LSTM layers", exact=True).input_value() == "2"  # the rest: the preset's

            open_page(page, base, "/Dataset", "Dataset")
            option = page.get_by_role("option", name="test", exact=True)
            for _ in range(5):  # a click that lands while the page reruns can close the list again
                page.get_by_label("split", exact=True).first.click()  # the examples' split
                try:
                    option.wait_for(timeout=5000)
                    break
                except Exception:
                    wait_idle(page)
            option.click()
            wait_idle(page)
            assert parse_qs(urlparse(page.url).query)["ds_split"] == ["test"]
            page.reload()
            page.locator("h1", has_text="Dataset").first.wait_for()
            wait_idle(page)
            page.get_by_text(re.compile(r"· test · ")).first.wait_for()  # the examples shown are test clips
            assert_no_exception(page, "/Dataset reload")
        except Exception:
            print(f"--- server log ---\n{log_path.read_text()[-4000:]}")
            raise


def pick(page, label: str, option: str, close: bool = False) -> None:
    """Choose `option` in the select or multiselect labelled `label` (retried: a click that lands
    while the page reruns can close the list again); `close`: then close a multiselect's list
    (Escape; a clearable selectbox would take it as "clear")."""
    choice = page.get_by_role("option", name=option).first
    for _ in range(5):
        page.get_by_label(label, exact=True).first.click()
        try:
            choice.wait_for(timeout=5000)
            break
        except Exception:
            wait_idle(page)
    choice.click()
    if close:
        page.keyboard.press("Escape")
    wait_idle(page)


def test_back_leaves_a_page_instead_of_stepping_through_its_selections(server, tmp_path: Path):
    """Issue 16: choosing runs on Compare (?runs=), Train (?run=) and Predict (?run=) replaces the
    URL entry (the selection still survives a reload), so one Back leaves the page. A
    `st.query_params` write pushed an entry per change, and Back stepped through each one."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from pages import fill_store  # benchmarks/pages.py: finished runs with real metrics, no weights

    from engine.runs.store import RunStore

    base, log_path = server
    store = RunStore(tmp_path / "cache" / "runs.sqlite", tmp_path / "cache" / "runs")
    ids = fill_store(store, 4, str(tmp_path / "data"))  # named "run 0" .. "run 3"
    store.close()

    def query(page, key: str) -> list[str]:
        return parse_qs(urlparse(page.url).query).get(key, [])

    with browser(tmp_path) as (context, page):
        try:
            open_page(page, base, "/Dataset", "Dataset")
            open_page(page, base, "/Compare?runs=run+0&runs=run+1", "Compare runs")  # a link as the page writes it
            assert "run 1" in page.locator('[data-testid="stMultiSelect"]', has_text="Runs to compare").first.inner_text()
            entries = page.evaluate("history.length")
            for k in (2, 3):
                pick(page, "Runs to compare", f"run {k}", close=True)
                assert query(page, "runs") == [f"run {i}" for i in range(k + 1)]  # the labels, as charts show them
            assert page.evaluate("history.length") == entries  # replaced, never pushed
            page.reload()
            page.locator("h1", has_text="Compare runs").first.wait_for()
            wait_idle(page)
            assert "run 3" in page.locator('[data-testid="stMultiSelect"]', has_text="Runs to compare").first.inner_text()
            page.go_back()
            page.locator("h1", has_text="Dataset").first.wait_for()
            assert urlparse(page.url).path == "/Dataset"

            for path, title, label in (("/Train", "Train", "Run"), ("/Predict", "Predict", "Model (a finished run)")):
                open_page(page, base, f"{path}?run=run+0+({ids[0]})", title)  # as the page writes it
                entries = page.evaluate("history.length")
                for k in (1, 2):
                    pick(page, label, f"run {k}")
                    assert query(page, "run") == [f"run {k} ({ids[k]})"]
                assert page.evaluate("history.length") == entries
                assert_no_exception(page, path)
                page.go_back()  # one Back: the page before (each Back above returned to Dataset), not run 1
                page.wait_for_url(lambda url: urlparse(url).path != path)
                assert urlparse(page.url).path == "/Dataset"

            page = context.new_page()  # old links (ids) open their runs too
            open_page(page, base, f"/Compare?runs={ids[2]},{ids[3]}", "Compare runs")
            chosen = page.locator('[data-testid="stMultiSelect"]', has_text="Runs to compare").first.inner_text()
            assert "run 2" in chosen and "run 3" in chosen
            for path, title in (("/Train", "Train"), ("/Predict", "Predict")):
                open_page(page, base, f"{path}?run={ids[3]}", title)
                page.get_by_text(re.compile(ids[3])).first.wait_for()  # its heading (Train), its summary (Predict)
                assert "from the link" not in page.inner_text("body")  # not "... not in this store"
        except Exception:
            print(f"--- server log ---\n{log_path.read_text()[-4000:]}")
            raise
