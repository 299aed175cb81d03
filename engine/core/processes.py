"""Processes: is one still alive (work left behind by a killed process), and starting workers safely."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import types
from contextlib import contextmanager
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Iterator


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux /proc), to tell a reused pid apart; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int | None, start: str | None = None) -> bool:
    """True when process `pid` runs (not a zombie) and, if known, started at `start`."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust os.kill
    fields_after_name = stat.rsplit(")", 1)[1].split()
    if fields_after_name[0] in ("Z", "X"):
        return False
    return start is None or fields_after_name[19] == start


_MAIN_LOCK = threading.Lock()


@contextmanager
def spawn_context() -> Iterator[BaseContext]:
    """A "spawn" multiprocessing context; start worker processes inside the `with` block.

    Spawned workers re-run the parent's `__main__` file. Under Streamlit (and AppTest) that is
    a page script, which would run again in every worker, so it is hidden while workers start.
    Fork is no answer: the dashboard and the job manager are threaded.
    """
    with _MAIN_LOCK:  # threads that start workers at once must not restore each other's bare module
        main = sys.modules.get("__main__")
        bare = types.ModuleType("__main__")  # no file, no spec: the child imports only what it unpickles
        sys.modules["__main__"] = bare
        try:
            yield multiprocessing.get_context("spawn")
        finally:
            if main is not None and sys.modules.get("__main__") is bare:  # unless a script run installed its own
                sys.modules["__main__"] = main
