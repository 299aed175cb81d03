"""Liveness and ends of runs: the heartbeat that shows other processes a JobManager's runs are
alive (engine.runs.store.mark_interrupted ends the runs whose beat stops), and how a run's end
is recorded wherever it trained: its TrainResult stored (`_store_result`), or, when its trainer
raised or its process died, the runs still active marked failed with a readable message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from typing import Any, Callable

import torch

from ..core.errors import EngineError
from .store import ACTIVE, RunStore

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0  # how often the manager stamps its active runs (store.HEARTBEAT_STALE_S: 60 s)


def heartbeat(store: RunStore, active: Callable[[], list[str]], shutdown: threading.Event) -> None:
    """A JobManager's heartbeat thread: stamp its queued and running runs (`active()`) every
    HEARTBEAT_EVERY_S until `shutdown`, so that other processes can tell them from runs whose
    owner died; then close this thread's store connection."""
    while not shutdown.wait(HEARTBEAT_EVERY_S):
        try:
            store.heartbeat(active())
        except EngineError as exc:  # a busy or damaged store: try again next beat
            log.warning("heartbeat failed: %s", exc)
    store.close()


def _fail_active(store: RunStore, run_ids: list[str], message: str) -> None:
    """Mark the runs still queued or running 'failed' with `message` (never raises)."""
    for run_id in run_ids:
        with contextlib.suppress(Exception):
            if store.status(run_id) in ACTIVE:
                store.set_status(run_id, "failed", error=message)


def _store_result(store: RunStore, run_id: str, result: Any, shutdown: threading.Event) -> str:
    """Save a run's TrainResult (a cancel during shutdown ends 'interrupted', resumable); a
    finished or diverged run's checkpoint goes. Returns the final status."""
    if result.status == "cancelled" and shutdown.is_set():
        result.status, result.error = "interrupted", "the job manager shut down"
    store.save_result(run_id, result)
    if result.status in ("finished", "diverged"):
        store.delete_checkpoint(run_id)
    return result.status


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def _failure_message(exc: BaseException, device: str) -> str:
    """A user-facing message: EngineError text as is; anything else with a traceback tail."""
    if isinstance(exc, EngineError):
        return str(exc)
    if _is_oom(exc):
        return (f"out of memory on {device}: lower train.batch_size, the model size, or the number "
                f"of runs at once ({type(exc).__name__}: {str(exc)[:300]})")
    tail = "".join(traceback.format_exception(exc)[-4:])
    return f"{type(exc).__name__}: {exc}\n{tail[-1500:]}"
