"""A run's live state and the training hooks that keep it: `Progress` (phase, epoch, step,
losses, ETA), `PrepProgress` (one fraction and time left across the stages of preparing a
run's data) and `_RunHooks`, the TrainHooks that update it, write epochs and checkpoints to
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
from typing import Any, Callable, Mapping

import torch

from .eta import EpochClock, prep_words
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
    data_done: int = 0  # loading data: clips (or files) done of data_total, in the stage in progress
    data_total: int = 0
    prep_fraction: float = 0.0  # loading data: share of ALL its stages done, in [0, 1], never going back
    prep_eta: float | None = None  # loading data: seconds left across its stages (None until measured)
    prep_stage: str = ""  # loading data: "2 of 5: features", the stage in progress

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
        elif self.phase == "loading data":
            parts.append(prep_words(self.prep_fraction, self.prep_eta, self.prep_stage, self.message))
        elif self.message:
            parts.append(self.message)
        return " ".join(parts)


# What each stage of preparing a run's data costs per clip, relative to extracting one clip's
# features (measured on the tiny demo, 2 cores, 2026-12-07: features ~0.02 s a clip after a
# ~5 s warm-up, the held-out channel ~0.03 s, the source change ~0.14 s, checks of cached
# headers ~0). Only the bar's pace depends on them: a stage found in the cache ends at once.
PREP_COSTS: dict[str, float] = {
    "reading the dataset": 0.1,
    "features": 1.0,
    "cross-collection validation (channel)": 2.0,
    "cross-collection validation (source)": 6.0,
    "cross-collection validation (held-out programs)": 1.0,
    "augmented training copies": 2.0,
    "outlier clips": 1.5,  # rendered from the soundfont, then featurised
}
ETA_AFTER_S = 2.0  # no time left is guessed before this much preparation was measured ...
ETA_AFTER_FRACTION = 0.05  # ... and this share of it done


class PrepProgress:
    """One bar for preparing a run's data. The loader announces its stages (`plan`: stage ->
    weight, e.g. clips x PREP_COSTS; `begin`: the stage starting), and every (done, total,
    message) report of a stage becomes one overall fraction in [0, 1] that never goes back,
    with a time left across all stages; `report(self)` gets each update.

    A loader that only calls it as progress(done, total, message) (no plan) gets one stage.
    `clock`: seconds (time.monotonic)."""

    def __init__(self, report: Callable[["PrepProgress"], None] = lambda prep: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.report, self.clock = report, clock
        self.started = clock()
        self.weights: dict[str, float] = {}
        self.stage: str | None = None
        self.sub = 0.0  # the stage in progress: its share done (never going back either)
        self.fraction, self.eta = 0.0, None
        self.done, self.total, self.message = 0, 0, ""

    def plan(self, weights: Mapping[str, float]) -> None:
        """The stages in order, each with its weight (> 0); replaces an earlier plan (a plan made
        before the dataset was read, refined once its clip counts are known)."""
        self.weights = {name: max(float(w), 1e-9) for name, w in weights.items()}
        self._update()

    def begin(self, stage: str) -> None:
        """Stage `stage` starts: the ones before it count as done."""
        self.stage, self.sub, self.done, self.total, self.message = stage, 0.0, 0, 0, ""
        self._update()

    def __call__(self, done: int, total: int, message: str) -> None:
        """A stage's own report: `done` of `total` (clips or files), `message` its words."""
        self.done, self.total, self.message = int(done), int(total), message
        if total > 0:
            self.sub = max(self.sub, min(1.0, done / total))  # a sub-step restarting at 0 never moves the bar back
        self._update()

    @property
    def stage_words(self) -> str:
        """'2 of 5: features' (empty without a plan naming the stage)."""
        names = list(self.weights)
        if self.stage not in names:
            return ""
        return f"{names.index(self.stage) + 1} of {len(names)}: {self.stage}"

    def _update(self) -> None:
        names = list(self.weights)
        if self.stage in names:
            i = names.index(self.stage)
            done = sum(self.weights[n] for n in names[:i]) + self.weights[self.stage] * self.sub
            fraction = done / sum(self.weights.values())
        else:
            fraction = self.sub
        self.fraction = min(1.0, max(self.fraction, fraction))
        elapsed = self.clock() - self.started
        if self.fraction >= 1.0:
            self.eta = 0.0
        elif elapsed >= ETA_AFTER_S and self.fraction >= ETA_AFTER_FRACTION:
            self.eta = elapsed * (1.0 - self.fraction) / self.fraction
        self.report(self)

    def fields(self) -> dict[str, Any]:
        """The Progress fields it sets (data_done, data_total, message, prep_fraction, prep_eta, prep_stage)."""
        return {"data_done": self.done, "data_total": self.total, "message": self.message,
                "prep_fraction": self.fraction, "prep_eta": self.eta, "prep_stage": self.stage_words}


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


@contextlib.contextmanager
def record_preparation(store: RunStore, run_ids: list[str], clock: Callable[[], float] = time.monotonic) -> Any:
    """Time the block (preparing the runs' data: the dataset, the features, their caches) and
    add its seconds to each run's `prepare_seconds`, kept apart from the training time (the
    epochs' own clock, history[i]["seconds"]). Recorded only when the block completes."""
    started = clock()
    yield
    seconds = clock() - started
    for run_id in run_ids:
        store.add_prepare_seconds(run_id, seconds)


def _step_every(device: str) -> int:
    """Steps between on_step calls: every step on CPU; every 10th on a GPU (each is a host sync)."""
    return 10 if device.startswith("cuda") else 1


def _stream(device: str) -> contextlib.AbstractContextManager:
    """Its own CUDA stream per worker thread on a GPU (so runs overlap); nothing on CPU."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.stream(torch.cuda.Stream(device=device))
    return contextlib.nullcontext()
