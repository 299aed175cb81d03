"""Liveness and ends of runs: the heartbeat that shows other processes a JobManager's runs are
alive (engine.runs.store.mark_interrupted ends the runs whose beat stops), and how a run's end
is recorded wherever it trained: its TrainResult stored (`_store_result`), or, when its trainer
raised or its process died, the runs still active marked failed with a readable message.
"""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from ..core import paths
from ..core.errors import EngineError, StoreError
from ..core.space import disk_full_error, is_disk_full
from .store import ACTIVE, RunStore

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0  # how often the manager stamps its active runs (store.HEARTBEAT_STALE_S: 60 s)


class EndLedger:
    """Final states that the store has not taken yet (a full disk, a store that cannot be
    written): run id -> (status, error). A run's end is never lost: it is kept here, whoever
    waits reads it (JobManager.wait, .record), and `retry` writes it once the store takes it
    (the heartbeat calls it every beat, shutdown once more). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: dict[str, tuple[str, str | None]] = {}

    def end(self, store: RunStore, run_id: str, status: str, error: str | None) -> bool:
        """Write `status` + `error` for `run_id` unless the store already holds an end for it;
        when the store cannot be written, keep it here (False). Never raises."""
        with self._lock:
            self._ends[run_id] = (status, error)
        return self._write(store, run_id)

    def get(self, run_id: str) -> tuple[str, str | None] | None:
        """The (status, error) kept for a run the store has not taken, else None."""
        with self._lock:
            return self._ends.get(run_id)

    def unsaved(self) -> dict[str, tuple[str, str | None]]:
        """Every end still waiting for the store."""
        with self._lock:
            return dict(self._ends)

    def retry(self, store: RunStore) -> list[str]:
        """Write every kept end the store now takes; returns the run ids still kept."""
        for run_id in list(self.unsaved()):
            self._write(store, run_id)
        return list(self.unsaved())

    def _write(self, store: RunStore, run_id: str) -> bool:
        kept = self.get(run_id)
        if kept is None:
            return True
        try:
            if store.stored_status(run_id) in ACTIVE:
                store.set_status(run_id, kept[0], error=kept[1])
            else:  # the store holds an end already (a member stored before): it stands
                store.release_end(run_id)
        except StoreError as exc:
            if "no run" not in str(exc):  # deleted meanwhile: nothing left to end
                return self._keep(store, run_id, kept, exc)
            store.release_end(run_id)
        except Exception as exc:  # a full disk, a busy store: kept, written on a later retry
            return self._keep(store, run_id, kept, exc)
        with self._lock:
            if self._ends.get(run_id) == kept:
                del self._ends[run_id]
        return True

    @staticmethod
    def _keep(store: RunStore, run_id: str, kept: tuple[str, str | None], exc: BaseException) -> bool:
        """The store did not take the end: log it and keep it beside the run's files too (read
        by mark_interrupted should this process stop first). Returns False (not stored)."""
        log.warning("cannot store the end of run %s yet: %s", run_id, exc)
        store.hold_end(run_id, *kept)  # every reader in this process sees it now
        store.keep_end(run_id, *kept)  # and the next process, should this one stop first
        return False


def heartbeat(store: RunStore, active: Callable[[], list[str]], shutdown: threading.Event,
              ledger: EndLedger | None = None) -> None:
    """A JobManager's heartbeat thread: stamp its queued and running runs (`active()`) every
    HEARTBEAT_EVERY_S until `shutdown`, so that other processes can tell them from runs whose
    owner died, and store the ends that the store could not take before (`ledger`; those runs
    are not stamped: should this process stay unable to write, another one ends them after
    HEARTBEAT_STALE_S with the end kept in their folders); then close this thread's store
    connection."""
    while not shutdown.wait(HEARTBEAT_EVERY_S):
        try:
            store.heartbeat(active())
        except EngineError as exc:  # a busy, full or damaged store: try again next beat
            log.warning("heartbeat failed: %s", exc)
        if ledger is not None:
            ledger.retry(store)
    store.close()


def _fail_active(store: RunStore, run_ids: list[str], message: str,
                 ledger: EndLedger | None = None) -> dict[str, str]:
    """Mark the runs still queued or running 'failed' with `message` (never raises). A status
    the store cannot take is kept in `ledger` (a new one when None) and retried from there.
    Returns {run id: message} of the ends the store did not take."""
    ledger = ledger if ledger is not None else EndLedger()
    unsaved = {}
    for run_id in run_ids:
        if not ledger.end(store, run_id, "failed", message):
            unsaved[run_id] = message
    return unsaved


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
    if is_disk_full(exc):  # a write the engine did not wrap: name the file's folder (else the cache)
        filename = getattr(exc, "filename", None)
        folder = Path(filename).parent if filename else paths.cache_root()
        return str(disk_full_error(folder, "training", exc=exc))
    if _is_oom(exc):
        return (f"out of memory on {device}: lower train.batch_size, the model size, or the number "
                f"of runs at once ({type(exc).__name__}: {str(exc)[:300]})")
    tail = "".join(traceback.format_exception(exc)[-4:])
    return f"{type(exc).__name__}: {exc}\n{tail[-1500:]}"
