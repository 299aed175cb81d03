"""Time left of a training run, from the epochs it has actually taken.

Only training epochs count: loading data and extracting features happen before the first
step and have their own progress (clips done / total), so they never inflate the estimate.
The pace is the median duration of the last few epochs (robust to one slow epoch, such as
the first, or one with a checkpoint; it follows a lasting change of speed within a few
epochs, such as a second run starting beside this one). Before the first epoch ends, the
pace is extrapolated from the steps of that epoch.
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
