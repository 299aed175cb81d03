"""Hardening of the command line (issue 13): exports, pipes, and answers on unusable audio."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

from engine.store import RunStore
from tests.test_hardening_store import _filled_store

ROOT = Path(__file__).resolve().parent.parent


def _engine(*args: str, cache: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_export_guards_names_that_spreadsheets_would_run(tmp_path):
    cache = tmp_path / "cache"
    ids = list(_filled_store(cache, n=2))
    store = RunStore(cache / "runs.sqlite", cache / "runs")
    store.rename(ids[0], '=HYPERLINK("http://evil.example","x")')
    store.set_tags(ids[1], ["@SUM(A1)"])
    done = _engine("export", cache=cache)
    assert done.returncode == 0, done.stderr
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(done.stdout))}
    assert rows[ids[0]]["name"] == "'" + '=HYPERLINK("http://evil.example","x")'
    assert rows[ids[1]]["tags"] == "'@SUM(A1)"
