"""Tiny synthetic runs for the job tests, and a script the kill test runs in a subprocess.

    python tests/helpers_jobs.py <db_path> <runs_dir> <epochs> <step_delay_s>

submits one run to a JobManager on that store, prints its id, and trains until done (or
killed). `step_delay_s` slows every step so the parent can kill it mid-run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.config import RunConfig  # noqa: E402


@dataclass
class Features:
    """Stand-in for engine.features.extract.FeatureSet: x (n, frames, features), y (n,), ids."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]


def tiny_config(epochs: int = 2, **values) -> RunConfig:
    """The study model shrunk to 8 hidden units on 3 frames x 21 features; batch 16."""
    return RunConfig().with_values(**{"model.hidden_size": 8, "model.num_layers": 1, "train.epochs": epochs,
                                      "train.batch_size": 16, "train.lr": 1e-2, **values})


def synthetic_data(config: RunConfig, n: int = 48, seed: int = 0) -> dict[str, Features]:
    """Learnable random features: class c shifts feature c; same data for every call."""
    rng = np.random.default_rng(seed)
    fc = config.features
    data = {}
    for index, split in enumerate(("training", "validation", "test")):
        y = np.arange(n, dtype=np.int64) % 8
        x = rng.standard_normal((n, fc.num_frames, fc.feature_dim)).astype(np.float32)
        x[np.arange(n), :, y] += 2.0
        data[split] = Features(x, y, [f"{split}-{index}-{i}" for i in range(n)])
    return data


def gated_data(gate, timeout: float = 10.0):
    """A data_loader that waits for `gate` (a threading.Event, at most `timeout` s) before
    returning synthetic_data: runs stay in 'loading data' until the test sets the gate."""

    def loader(config: RunConfig) -> dict[str, Features]:
        gate.wait(timeout)
        return synthetic_data(config)

    return loader


def main(db_path: str, runs_dir: str, epochs: str, step_delay: str) -> None:
    from engine.runs import jobs
    from engine.runs.store import RunStore

    original = jobs._RunHooks.on_step

    def slow_step(self, *args) -> None:
        time.sleep(float(step_delay))
        original(self, *args)

    jobs._RunHooks.on_step = slow_step
    manager = jobs.JobManager(RunStore(db_path, runs_dir), data_loader=synthetic_data, checkpoint_every_s=0.0)
    run_id = manager.submit(tiny_config(epochs=int(epochs)), name="slow")
    print(run_id, flush=True)
    manager.wait([run_id])


if __name__ == "__main__":
    main(*sys.argv[1:5])
