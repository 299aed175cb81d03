"""A dashboard server and headless Chromium for the real-browser test and benchmarks/live_view.py.

`start_server` runs `streamlit run dashboard.py` on a free loopback port in its own process
group (so `stop_server` ends it and every process it started), with $MEDLEY_CACHE and
$MEDLEY_DATA set, and returns once `/_stcore/health` answers. `publish_screenshots` makes the
README's small page images (docs/images) from the test's full-page screenshots.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


README_IMAGES = ROOT / "docs" / "images"
README_SHOTS = {  # docs/images/<name>.png <- tests/artifacts/<screenshot>.png (tests/test_e2e_browser.py)
    "home": "0_home", "dataset": "1_dataset_empty", "train": "2_train_result", "compare": "3_compare",
    "predict": "4_predict",
}
FIRST_SCREEN = (1400, 1260)  # px of a screenshot kept: the first screen of the page at the test's width
IMAGE_WIDTH = 640  # px of a README image
MAX_IMAGE_BYTES = 150_000


def publish_screenshots(artifacts: Path, dest: Path = README_IMAGES) -> list[Path]:
    """Write dest/<name>.png for each README_SHOTS entry from artifacts/<screenshot>.png: its
    first screen (FIRST_SCREEN, cropped from the top left) scaled to IMAGE_WIDTH px wide and
    reduced to a 256-colour palette (fewer colours if still over MAX_IMAGE_BYTES). Returns the
    files written; FileNotFoundError names a screenshot the walk did not take."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, shot in README_SHOTS.items():
        with Image.open(artifacts / f"{shot}.png") as image:
            box = (0, 0, min(FIRST_SCREEN[0], image.width), min(FIRST_SCREEN[1], image.height))
            first = image.convert("RGB").crop(box)
        small = first.resize((IMAGE_WIDTH, round(first.height * IMAGE_WIDTH / first.width)), Image.LANCZOS)
        target = dest / f"{name}.png"
        for colors in (256, 128, 64, 32):
            small.quantize(colors=colors, dither=Image.Dither.NONE).save(target, optimize=True)
            if target.stat().st_size <= MAX_IMAGE_BYTES:
                break
        written.append(target)
    return written


RUN_ID = re.compile(r"r-\d{8}-[0-9a-f]+")  # engine.runs.store's run ids


def run_in_url(url: str) -> str | None:
    """The run id in a page's ?run= ("name (r-20261130-a3f136)", as the Train page's URL-bound
    Run selectbox writes it, or a bare id); None when there is none."""
    values = parse_qs(urlparse(url).query).get("run", [])
    found = RUN_ID.search(values[-1]) if values else None
    return found.group(0) if found else None


def wait_for_run_in_url(page, timeout_ms: int) -> str:
    """Wait until the Train page shows a run (after Start training); its id, from the URL's
    ?run= or else from the run's heading ("Run name (r-...)"): a run chosen by Start is set from
    code, and Streamlit writes such a value of a URL-bound widget to the URL only when the
    widget was drawn in the previous script run (the Train page draws its Run picker always, and
    tests/test_e2e_browser.py checks the URL after the first run)."""
    deadline = time.monotonic() + timeout_ms / 1000
    heading = page.locator("h3", has_text="Run ")
    while True:
        run_id = run_in_url(page.url)
        if run_id is None and heading.count():
            found = RUN_ID.search(heading.first.inner_text())
            run_id = found.group(0) if found else None
        if run_id is not None:
            return run_id
        if time.monotonic() > deadline:
            raise TimeoutError(f"no run shown at {page.url} after {timeout_ms / 1000:.0f} s")
        page.wait_for_timeout(250)


class ServerDidNotStart(RuntimeError):
    """The server exited or did not answer its health check in time (the message ends with its log)."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache: Path, data: str | Path, log: Path, timeout_s: float = 90) -> tuple[subprocess.Popen, str]:
    """A fresh dashboard server on cache `cache` and dataset `data`, its output in `log`;
    (process, base URL) once healthy. ServerDidNotStart (with the log's tail) otherwise."""
    port = free_port()
    env = {**os.environ, "MEDLEY_CACHE": str(cache), "MEDLEY_DATA": str(data), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return proc, base
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise ServerDidNotStart(f"streamlit did not start:\n{Path(log).read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def wait_idle(page, timeout_ms: int) -> None:
    """Wait until the script run (not a timer fragment) is done: stApp says notRunning twice."""
    for _ in range(2):
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
        page.wait_for_timeout(400)
