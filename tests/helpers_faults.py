"""Fault injection for tests/test_faults.py, and a CLI the SIGTERM test runs in a subprocess.

    python tests/helpers_faults.py <cache> <epochs> <step_delay_s>

runs `python -m engine train` on synthetic features (tests/helpers_jobs.synthetic_data, no
dataset) with every training step slowed by `step_delay_s`, and exits with the CLI's status.
"""

from __future__ import annotations

import errno
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers_jobs import synthetic_data  # noqa: E402

FILE_POINTS = {"checkpoint": ".checkpoint.pt.", "model": ".model.pt.", "predictions": ".predictions.json.",
               "meta": ".meta.json."}  # a point -> the start of its temporary file's name
WRITE_SQL = ("BEGIN", "UPDATE", "INSERT", "DELETE")


class Faults:
    """One write point that fails while `active`, from the moment the run's first checkpoint
    is saved (so that Resume has one to continue from): a file point writes part of its
    temporary file, then raises OSError(ENOSPC); "store" makes every SQLite write raise
    sqlite3.OperationalError('database or disk is full')."""

    def __init__(self, point: str) -> None:
        self.point, self.active, self.armed, self.hits = point, True, False, 0

    def failing(self, point: str | None) -> bool:
        hit = self.active and self.armed and point == self.point
        self.hits += hit
        return hit

    def install(self, monkeypatch: Any) -> "Faults":
        """Patch torch.save, Path.write_text and RunStore._conn for the test."""
        import pathlib

        import torch

        from engine.runs.store import RunStore

        real_save, real_text, real_conn = torch.save, pathlib.Path.write_text, RunStore._conn

        def point_of(path: Any) -> str | None:
            name = Path(path).name
            return next((p for p, start in FILE_POINTS.items() if name.startswith(start)), None)

        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            point = point_of(f)
            if self.failing(point):
                Path(f).write_bytes(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
            real_save(obj, f, *args, **kwargs)
            if point == "checkpoint":
                self.armed = True

        def write_text(path: Any, text: str, *args: Any, **kwargs: Any) -> int:
            if self.failing(point_of(path)):
                real_text(path, text[: len(text) // 2])
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_text(path, text, *args, **kwargs)

        def conn(store: Any) -> Any:
            return _FullDatabase(real_conn(store), self)

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(pathlib.Path, "write_text", write_text)
        monkeypatch.setattr(RunStore, "_conn", conn)
        return self


class _FullDatabase:
    """A real sqlite3 connection whose writes fail with SQLITE_FULL's message while the fault is on."""

    def __init__(self, con: sqlite3.Connection, faults: Faults) -> None:
        self._con, self._faults = con, faults

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith(WRITE_SQL) and self._faults.failing("store"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def synthetic_loader(config: Any, device: str, progress: Any) -> dict:
    """engine.runs.jobs._default_loader's signature, synthetic features (no dataset)."""
    return synthetic_data(config)


TINY_FLAGS = ("--hidden", "8", "--layers", "1", "--batch-size", "16", "--lr", "0.01")


def main(cache: str, epochs: str, step_delay: str) -> int:
    from engine import cli
    from engine.runs import jobs

    original = jobs._RunHooks.on_step

    def slow_step(self: Any, *args: Any) -> None:
        time.sleep(float(step_delay))
        original(self, *args)

    jobs._RunHooks.on_step = slow_step
    jobs._default_loader = synthetic_loader
    return cli.main(["--cache", cache, "train", "--epochs", epochs, *TINY_FLAGS, "--device", "cpu", "--json"])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
