"""A run's live state and the training hooks that keep it: `Progress` (phase, epoch, step,
losses, ETA) and `_RunHooks`, the TrainHooks that update it, write epochs and checkpoints to
the store and notice a cancel. Shared by every place a run trains: a JobManager thread
(engine.runs.jobs), a training worker process (`_WorkerHost` stands in for the manager there,
`_WorkerHooks` also send the Progress to the parent) and a Ray task (engine.runs.ray_backend).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .eta import EpochClock
from .store import RunStore
from ..learn.train import TrainHooks

RECENT_LOSSES = 200  # step losses kept in Progress.recent_losses
CANCEL_POLL_S = 2.0  # how often a running run checks the store for a cancel from another process
SEND_EVERY_S = 0.25  # a worker sends progress at most this often (and at every epoch)


@dataclass
class Progress:
    """Live state of one run. Times in seconds; losses are cross-entropy per step."""

    run_id: str
    phase: str = "queued"  # queued, loading data, training, evaluating, or the final status
    message: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    train_loss: float | None = None
    val_accuracy: float | None = None
    elapsed: float = 0.0
    eta: float | None = None  # seconds of training left, from measured epoch times (engine.runs.eta)
    recent_losses: list[float] = field(default_factory=list)
    data_done: int = 0  # loading data: clips (or files) done of data_total, from the loader's progress
    data_total: int = 0

    @property
    def fraction(self) -> float:
        """Share of the run's epochs done, in [0, 1]."""
        if not self.epochs:
            return 0.0
        done = self.epoch - 1 + (self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0)
        return min(max(done / self.epochs, 0.0), 1.0)

    def describe(self) -> str:
        """One line for a terminal: 'r-... training epoch 3/50 step 10/59 loss 1.23 val 45.0% eta 1m20s'."""
        parts = [self.run_id, self.phase]
        if self.phase == "training":
            parts.append(f"epoch {max(self.epoch, 1)}/{self.epochs}")
            if self.steps_per_epoch:
                parts.append(f"step {self.step}/{self.steps_per_epoch}")
            if self.train_loss is not None:
                parts.append(f"loss {self.train_loss:.3f}")
            if self.val_accuracy is not None:
                parts.append(f"val {100 * self.val_accuracy:.1f}%")
            if self.eta is not None:
                parts.append(f"eta {_seconds(self.eta)}")
        elif self.message:
            parts.append(self.message)
        return " ".join(parts)


def _seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _RunHooks(TrainHooks):
    """Connects one training run to its Progress, the store and its cancel Event."""

    def __init__(self, manager: Any, run_id: str, progress: Progress, stop: threading.Event,
                 resume: dict | None, step_every: int) -> None:
        super().__init__(step_every=step_every)
        self.manager, self.store, self.run_id = manager, manager.store, run_id
        self.progress, self.stop = progress, stop
        self.losses_stored = len(resume["step_losses"]) if resume else 0
        self.first_epoch = int(resume["epoch"]) if resume else 0
        self.started = time.monotonic()
        self.clock = EpochClock(epochs=progress.epochs, epoch_started=self.started)
        self.last_checkpoint = 0.0
        self.last_poll = time.monotonic()
        self.recent: collections.deque[float] = collections.deque(maxlen=RECENT_LOSSES)

    def on_step(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        self.recent.append(loss)
        self.clock.step(time.monotonic())
        p = self.progress
        with self.manager._lock:
            p.phase, p.epoch, p.step, p.steps_per_epoch, p.train_loss = "training", epoch, step, steps_per_epoch, loss
            p.recent_losses = list(self.recent)
            self._times(p)

    def _times(self, p: Progress) -> None:
        now = time.monotonic()
        p.elapsed = now - self.started
        p.eta = self.clock.eta(now, max(p.epoch, 1), p.step, p.steps_per_epoch)

    def checkpoint_due(self, epoch: int) -> bool:
        """The first epoch, then at most one checkpoint per `checkpoint_every_s`."""
        return epoch == 1 or time.monotonic() - self.last_checkpoint >= self.manager.checkpoint_every_s

    def on_epoch(self, record: dict, checkpoint: dict) -> None:
        losses = checkpoint["step_losses"][self.losses_stored:]
        self.losses_stored = len(checkpoint["step_losses"])
        self.clock.epoch_end(time.monotonic())
        p = self.progress
        with self.manager._lock:  # progress first: whoever sees the stored epoch sees its ETA too
            p.epoch, p.step, p.val_accuracy = record["epoch"], p.steps_per_epoch, record.get("val_accuracy")
            if record["epoch"] >= p.epochs:
                p.phase = "evaluating"
            self._times(p)
        self.store.append_epoch(self.run_id, record, losses)
        if "model" in checkpoint:  # a full one: checkpoint_due said so
            self.store.save_checkpoint(self.run_id, checkpoint)
            self.last_checkpoint = time.monotonic()
        listener = getattr(self.manager, "epoch_listener", None)  # a search's pruner (engine.runs.search)
        if listener is not None and listener(self.run_id, record):  # True: prune, stop before the next step
            self.stop.set()

    def should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        now = time.monotonic()
        if now - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = now
            if self.store.status(self.run_id) == "cancelled":  # cancelled from another process
                self.stop.set()
        return self.stop.is_set()


class _WorkerHost:
    """What _RunHooks needs of a JobManager, inside a worker process."""

    def __init__(self, store: RunStore, checkpoint_every_s: float) -> None:
        self.store, self.checkpoint_every_s = store, checkpoint_every_s
        self._lock = threading.RLock()


class _WorkerHooks(_RunHooks):
    """_RunHooks that also send the Progress to the parent (throttled; always at an epoch)."""

    def __init__(self, *args: Any, send: Callable[[Progress], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send, self.last_send = send, 0.0

    def on_step(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        super().on_step(epoch, step, steps_per_epoch, loss)
        now = time.monotonic()
        if now - self.last_send >= SEND_EVERY_S:
            self.last_send = now
            self.send(self.progress)

    def on_epoch(self, record: dict, checkpoint: dict) -> None:
        super().on_epoch(record, checkpoint)
        self.send(self.progress)


def _step_every(device: str) -> int:
    """Steps between on_step calls: every step on CPU; every 10th on a GPU (each is a host sync)."""
    return 10 if device.startswith("cuda") else 1


def _stream(device: str) -> contextlib.AbstractContextManager:
    """Its own CUDA stream per worker thread on a GPU (so runs overlap); nothing on CPU."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.stream(torch.cuda.Stream(device=device))
    return contextlib.nullcontext()
