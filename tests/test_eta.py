"""Time left of a run (engine.runs.eta) and the CPU thread policy of the job manager."""

from __future__ import annotations

import pytest

from engine.core.errors import ConfigError
from engine.runs.eta import EpochClock, epoch_pace, eta_seconds
from engine.runs.worker import cpu_threads


def test_pace_is_the_median_of_the_last_epochs() -> None:
    assert epoch_pace([]) is None
    assert epoch_pace([10.0]) == 10.0
    # the slow first epoch (warm-up) drops out of the window; one slow epoch does not move the median
    assert epoch_pace([60.0, 10.0, 10.0, 10.0, 30.0, 10.0], window=5) == 10.0
    assert epoch_pace([5.0, 7.0], window=5) == 6.0


def test_eta_counts_the_epochs_left_at_the_measured_pace() -> None:
    # 10 s per epoch, 40 epochs not finished, the current one half done: 39.5 epochs left
    assert eta_seconds([10.0] * 10, 40, epoch_fraction=0.5) == pytest.approx(395.0)
    assert eta_seconds([10.0] * 10, 0) == 0.0
    assert eta_seconds([10.0], 1, epoch_fraction=1.0) == 0.0


def test_eta_before_the_first_epoch_extrapolates_its_steps() -> None:
    assert eta_seconds([], 50) is None  # nothing measured: no number rather than a made-up one
    assert eta_seconds([], 50, epoch_fraction=0.0, epoch_elapsed=3.0) is None
    # a fifth of epoch 1 in 2 s: 10 s per epoch, 49.8 epochs left
    assert eta_seconds([], 50, epoch_fraction=0.2, epoch_elapsed=2.0) == pytest.approx(498.0)


def test_eta_follows_a_lasting_change_of_speed() -> None:
    # epochs took 10 s, then a second run started and they take 20 s: within a few epochs
    # the estimate doubles (the old mean-since-start estimate would still say ~10 s per epoch)
    durations = [10.0] * 20 + [20.0] * 3
    assert eta_seconds(durations, 10) == pytest.approx(200.0)


def test_eta_does_not_count_time_spent_before_training() -> None:
    # the old estimate divided the elapsed time, feature extraction included, by epochs done
    clock = EpochClock(epochs=50, epoch_started=1000.0)  # training starts at t=1000 (data took 600 s before)
    for epoch in range(1, 4):
        clock.step(1000.0 + 10 * (epoch - 1))
        clock.epoch_end(1000.0 + 10 * epoch)
    assert clock.durations == [10.0, 10.0, 10.0]
    # epoch 4, 2 of 4 steps done, at t=1035: 46.5 epochs left at 10 s
    assert clock.eta(1035.0, epoch=4, step=2, steps_per_epoch=4) == pytest.approx(465.0)
    # right after epoch 3 ended (step == steps_per_epoch): 47 epochs left
    assert clock.eta(1030.0, epoch=3, step=4, steps_per_epoch=4) == pytest.approx(470.0)


def test_eta_of_a_resumed_run_uses_absolute_epochs() -> None:
    clock = EpochClock(epochs=50, epoch_started=0.0)  # resumed at epoch 40: epochs 41.. run now
    clock.epoch_end(8.0)
    assert clock.eta(8.0, epoch=41, step=5, steps_per_epoch=5) == pytest.approx(9 * 8.0)


def test_cpu_threads_leaves_a_core_and_honours_the_variable() -> None:
    assert cpu_threads(cpu_count=2, env="") == 1
    assert cpu_threads(cpu_count=1, env="") == 1
    assert cpu_threads(cpu_count=16, env="") == 15
    assert cpu_threads(cpu_count=2, env="2") == 2
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match="MEDLEY_TORCH_THREADS"):
            cpu_threads(cpu_count=2, env=bad)
