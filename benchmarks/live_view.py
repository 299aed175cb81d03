"""What watching costs: the same training run with a page open in a real browser vs no browser.

A fresh `streamlit run dashboard.py` (temporary cache: its own store and feature cache) and
headless Chromium (Playwright, /usr/bin/chromium). Every run is the Train page's default run
(the study's base configuration, 50 epochs), started by pressing *Start training*, trained by
the server's own job manager, and timed by the store (finished - started). Three modes,
interleaved in each repeat (order rotated) so that drift of a shared machine hits all alike:

- unwatched: the tab that pressed Start is closed at once (no browser session at all);
- train: the Train page stays open on the run (live progress and charts);
- compare: the Compare page, open (and drawn) with 10 finished runs chosen before the run is
  started from a Train tab that then closes, stays open (it redraws when the run is queued and
  when it finishes).

One unwatched warm-up run first (features extracted and cached, torch warmed up). Prints each
run, the medians, and `overhead: <ratio>x` (median watched / median unwatched, the worse page).

    python benchmarks/live_view.py [--data PATH|demo:default] [--repeats 3] [--epochs 50]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import helpers_browser  # noqa: E402  (tests/helpers_browser.py: the server and Chromium the e2e test uses)
from helpers_browser import CHROMIUM, CHROMIUM_ARGS, start_server, stop_server  # noqa: E402

LOAD_MS = 120_000
RUN_TIMEOUT_S = 1200
MODES = ("unwatched", "train", "compare")
COMPARED_RUNS = 10


def wait_idle(page) -> None:
    """The script run (not a timer fragment) is done."""
    helpers_browser.wait_idle(page, LOAD_MS)


def start_run(context, base: str, epochs: int):
    """Open the Train page in a new tab, press Start (the default run); (tab, run id)."""
    page = context.new_page()
    page.goto(f"{base}/Train", wait_until="domcontentloaded")
    page.locator("h1", has_text="Train").first.wait_for(timeout=LOAD_MS)
    wait_idle(page)
    field = page.get_by_label("epochs", exact=True)
    if field.input_value() != str(epochs):
        field.fill(str(epochs))
        field.press("Enter")
        wait_idle(page)
    page.get_by_role("button", name="Start training").click()
    return page, helpers_browser.wait_for_run_in_url(page, LOAD_MS)


def wait_run(db: Path, run_id: str) -> float:
    """Poll the store (read-only, every 0.5 s) until the run ends; its training seconds."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        while time.monotonic() < deadline:
            row = con.execute("SELECT status, started, finished FROM runs WHERE id=?", (run_id,)).fetchone()
            if row and row[0] not in ("queued", "running"):
                if row[0] != "finished":
                    raise SystemExit(f"run {run_id} ended {row[0]}")
                return row[2] - row[1]
            time.sleep(0.5)
    finally:
        con.close()
    raise SystemExit(f"run {run_id} did not finish within {RUN_TIMEOUT_S} s")


def one_run(context, base: str, db: Path, mode: str, epochs: int, compared: list[str]) -> float:
    """Start the default run and time it with `mode`'s page open (or none). The Compare page is
    opened (and fully drawn) first, as by someone who watches it while a run is started."""
    watcher = None
    if mode == "compare":
        watcher = context.new_page()
        watcher.goto(f"{base}/Compare?runs={','.join(compared)}", wait_until="domcontentloaded")
        watcher.get_by_text("Side by side").first.wait_for(timeout=LOAD_MS)
        wait_idle(watcher)
    page, run_id = start_run(context, base, epochs)
    if mode == "train":
        watcher = page
    else:
        page.close()
    seconds = wait_run(db, run_id)
    if watcher is not None:
        watcher.close()
    return seconds


def resolve_data(data: str) -> str:
    """A dataset folder: `demo:SIZE` is made (once) under ./cache/demo/SIZE."""
    if data.startswith("demo"):
        from engine.data.demo import make_demo

        size = data.split(":", 1)[1] if ":" in data else "default"
        return str(make_demo(size, root=ROOT / "cache" / "demo" / size))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="demo:default", help="dataset folder, or demo:SIZE (default demo:default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from pages import fill_store  # benchmarks/pages.py: finished runs with real metrics

    data = resolve_data(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as folder:
        work = Path(folder)
        cache = work / "cache"
        os.environ["MEDLEY_CACHE"] = str(cache)
        from engine.runs.store import RunStore

        store = RunStore(cache / "runs.sqlite", cache / "runs")
        compared = fill_store(store, COMPARED_RUNS, data)
        store.close()
        try:
            proc, base = start_server(cache, data, work / "server.log")
        except helpers_browser.ServerDidNotStart as exc:
            raise SystemExit(str(exc)) from None
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            with sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    str(work / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                    viewport={"width": 1400, "height": 900})
                context.set_default_timeout(LOAD_MS)
                warm = one_run(context, base, cache / "runs.sqlite", "unwatched", args.epochs, compared)
                print(f"warm-up (features extracted, not counted): {warm:.1f} s", flush=True)
                for repeat in range(args.repeats):
                    order = MODES[repeat % 3:] + MODES[:repeat % 3]
                    for mode in order:
                        seconds = one_run(context, base, cache / "runs.sqlite", mode, args.epochs, compared)
                        times[mode].append(seconds)
                        print(f"repeat {repeat + 1} {mode:<10} {seconds:7.1f} s", flush=True)
                context.close()
        finally:
            stop_server(proc)
    med = {mode: statistics.median(values) for mode, values in times.items()}
    print(f"median over {args.repeats} repeats ({args.epochs} epochs, study base, {data}):")
    for mode in MODES:
        print(f"  {mode:<10} {med[mode]:7.1f} s  ({', '.join(f'{v:.1f}' for v in times[mode])})")
    train, compare = med["train"] / med["unwatched"], med["compare"] / med["unwatched"]
    for mode in ("train", "compare"):  # within one repeat the runs were minutes apart: less drift
        paired = [w / u for w, u in zip(times[mode], times["unwatched"])]
        print(f"  {mode} / unwatched per repeat: {', '.join(f'{r:.2f}' for r in paired)} "
              f"(median {statistics.median(paired):.2f})")
    print(f"Train page open:   {train:.2f}x")
    print(f"Compare page open: {compare:.2f}x ({COMPARED_RUNS} runs chosen)")
    print(f"overhead: {max(train, compare):.2f}x")


if __name__ == "__main__":
    main()
