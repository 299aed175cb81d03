"""Time left of a training run, from the epochs it has actually taken.

Only training epochs count: loading data and extracting features happen before the first
step and have their own progress (clips done / total), so they never inflate the estimate.
The pace is the median duration of the last few epochs (robust to one slow epoch, such as
the first, or one with a checkpoint; it follows a lasting change of speed within a few
epochs, such as a second run starting beside this one). Before the first epoch ends, the
pace is extrapolated from the steps of that epoch.

Also the words for time, shared by the CLI and the dashboard: `fmt_duration`, `prep_words`
(preparing a run's data: one fraction and time left across its stages) and `time_spent`
(a finished run: training, and preparing features apart).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Sequence

PACE_WINDOW = 5  # epochs whose median duration sets the pace


def epoch_pace(durations: Sequence[float], *, window: int = PACE_WINDOW) -> float | None:
    """Seconds per epoch: the median of the last `window` measured epoch durations (s);
    None when no epoch has been measured."""
    recent = [float(d) for d in durations[-window:] if d >= 0]
    return statistics.median(recent) if recent else None


def eta_seconds(durations: Sequence[float], epochs_left: int, *, epoch_fraction: float = 0.0,
                epoch_elapsed: float = 0.0, window: int = PACE_WINDOW) -> float | None:
    """Seconds of training left.

    durations: seconds each finished epoch of this session took, in order.
    epochs_left: epochs not finished yet, counting the one in progress.
    epoch_fraction: share of the epoch in progress done, in [0, 1] (steps done / steps per epoch).
    epoch_elapsed: seconds spent so far in the epoch in progress.
    Returns None while nothing has been measured (no finished epoch and no step done).
    """
    if epochs_left <= 0:
        return 0.0
    fraction = min(max(float(epoch_fraction), 0.0), 1.0)
    pace = epoch_pace(durations, window=window)
    if pace is None:
        if fraction <= 0 or epoch_elapsed <= 0:
            return None
        pace = epoch_elapsed / fraction  # the first epoch, extrapolated from its own steps
    return max(0.0, pace * (epochs_left - fraction))


@dataclass
class EpochClock:
    """Measures the epochs of one training session and estimates the time left.

    epochs: the run's total epochs (a resumed run counts from its absolute epoch numbers).
    Times are `time.monotonic()` seconds passed in by the caller; epoch_started: when the
    epoch in progress began (None: at the first step).
    """

    epochs: int
    durations: list[float] = field(default_factory=list)
    epoch_started: float | None = None

    def step(self, now: float) -> None:
        """A training step happened (the first one starts the clock)."""
        if self.epoch_started is None:
            self.epoch_started = now

    def epoch_end(self, now: float) -> None:
        """An epoch finished at `now`."""
        if self.epoch_started is not None:
            self.durations.append(now - self.epoch_started)
        self.epoch_started = now

    def eta(self, now: float, epoch: int, step: int, steps_per_epoch: int) -> float | None:
        """Seconds left. epoch: 1-based epoch in progress (or just finished when
        step == steps_per_epoch); step: steps done in it."""
        fraction = step / steps_per_epoch if steps_per_epoch else 0.0
        left = self.epochs - (epoch - 1)
        elapsed = 0.0 if self.epoch_started is None else now - self.epoch_started
        if fraction >= 1.0:  # the epoch just ended: the next one has not started
            left, fraction, elapsed = left - 1, 0.0, 0.0
        return eta_seconds(self.durations, left, epoch_fraction=fraction, epoch_elapsed=elapsed)


def fmt_duration(seconds: float | None) -> str:
    """12.4 -> '12 s'; 185 -> '3 min 05 s'; 3725 -> '1 h 02 min'; None -> '?'."""
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def time_spent(training: float | None, preparing: float | None, total: float | None) -> str:
    """Where a run's time went, in words: 'training 5 s, preparing features 44 s'.

    training: seconds of its epochs (history[-1]["seconds"]; preparation not included);
    preparing: seconds spent preparing its data (RunRecord.prepare_seconds; None for runs
    stored before it was recorded); total: from its start to its end (RunRecord.duration).
    Empty when nothing is known."""
    if training is not None and preparing is not None:
        return f"training {fmt_duration(training)}, preparing features {fmt_duration(preparing)}"
    if training is not None:  # an older run: its preparation was not recorded apart
        whole = f" ({fmt_duration(total)} from start to end, preparing features included)" if total else ""
        return f"training {fmt_duration(training)}{whole}"
    if preparing is not None:
        return f"preparing features {fmt_duration(preparing)}, no epoch finished"
    return fmt_duration(total) if total else ""


def prep_words(fraction: float, eta: float | None, stage: str, message: str) -> str:
    """One line on preparing a run's data: '42% · about 20 s left · step 2 of 5: features
    (features test: 4/32 clips)' ('0% · starting' before the first report); the same words in
    the sidebar, on the Train page and in the CLI."""
    parts = [f"{100 * fraction:.0f}%"]
    if eta is not None:
        parts.append(f"about {fmt_duration(eta)} left")
    detail = message[len("loading data: "):] if message.startswith("loading data: ") else message
    if stage:
        parts.append(f"step {stage}" + (f" ({detail})" if detail else ""))
    else:
        parts.append(detail or "starting")
    return " · ".join(parts)
