"""Pruned TPE search against a full grid over the same small space (issue #26).

Both go through the engine's own search (`engine.runs.search`: an Optuna study whose trials are
runs on a JobManager), each from scratch in its own store: the grid is Optuna's GridSampler
over every combination, without pruning; the search is TPE with the median pruner and half as
many trials as the grid has points. Every trial trains the same model with the same seed, so a
configuration scores the same in both. Counted: the training epochs each used until its first
trial within 1 point of the grid's best validation accuracy (a pruned trial's epochs count
too); a search that never gets there counts its epochs plus the whole grid's (what finding
the best would still cost). The grid's reference is all its epochs: it must train every
point to know its best. The search runs with 3 sampler seeds; the figure is the median.

Data: by default synthetic features shaped like the study's input (3 frames x 21 values, 8
classes, a noisy class offset so that the learning rate, width and batch size matter);
`--data demo:tiny` (or a dataset folder) trains on real features through the default loader.

    python benchmarks/search.py                  # 6 epochs per trial, 3 search seeds
    python benchmarks/search.py --quick          # 3 epochs, a smaller grid (well under a minute)

The last line is `epochs_ratio: R (search reached the grid's best in R of the grid's epochs)`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.config import RunConfig  # noqa: E402
from engine.core.search_space import parse_space  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.search import SearchSpec, start_search, trial_rows  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402

SPACE = {"train.lr": [3e-4, 1e-3, 3e-3, 1e-2], "model.hidden_size": [8, 32], "train.batch_size": [16, 64]}
QUICK_SPACE = {"train.lr": [3e-4, 1e-3, 3e-3, 1e-2], "model.hidden_size": [8, 32]}
WITHIN = 0.01  # "reached the grid's best": within 1 point of it


class Split:
    """x (n, frames, features) float32, y (n,), ids: what a run's data holds."""

    def __init__(self, x: np.ndarray, y: np.ndarray, ids: list[str]) -> None:
        self.x, self.y, self.ids = x, y, ids


def synthetic(n: int = 400) -> dict[str, Split]:
    """Training and validation clips: class c shifts a class-specific direction of the 63 values, in noise."""
    rng = np.random.default_rng(0)
    direction = rng.standard_normal((8, 3, 21)).astype(np.float32)
    out = {}
    for split in ("training", "validation"):
        y = rng.integers(0, 8, n)
        x = rng.standard_normal((n, 3, 21)).astype(np.float32) * 3.0 + 0.6 * direction[y]
        out[split] = Split(x.astype(np.float32), y.astype(np.int64), [f"{split}-{i}" for i in range(n)])
    return out


def base_config(epochs: int, data: str | None) -> RunConfig:
    return RunConfig().with_values(**{"data": data or "", "model.num_layers": 1, "train.epochs": epochs,
                                      "train.select": "best", "train.standardize": True})


def run_study(name: str, spec_kw: dict, folder: Path, data: str | None) -> list:
    """Run one study in a fresh store; its trial rows in order."""
    store = RunStore(folder / f"{name}.sqlite", folder / f"{name}-runs")
    cache = {}
    loader = None if data else (lambda config: cache.setdefault("d", synthetic()))
    manager = JobManager(store, data_loader=loader, max_concurrent=1, device="cpu")
    try:
        search = start_search(SearchSpec(name=name, **spec_kw), manager, folder / "search.sqlite")
        search.run()
        return trial_rows(search.study)
    finally:
        manager.shutdown()


def epochs_to_reach(rows: list, target: float) -> tuple[int, bool]:
    """(epochs trained until the first trial whose value is >= target, reached?)."""
    used = 0
    for row in rows:
        used += row.epochs
        if row.state == "complete" and row.value is not None and row.value >= target:
            return used, True
    return used, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs per trial over a 8-point grid")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 6; quick 3)")
    parser.add_argument("--seeds", type=int, default=3, help="search (sampler) seeds; the median is reported")
    parser.add_argument("--data", default=None, help="demo:tiny or a dataset folder (default: synthetic features)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    epochs = args.epochs or (3 if args.quick else 6)
    raw = QUICK_SPACE if args.quick else SPACE
    base = base_config(epochs, args.data)
    space = parse_space(raw, base)
    points = int(np.prod([len(v) for v in raw.values()]))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["MEDLEY_CACHE"] = str(folder / "cache")
        t0 = time.perf_counter()
        grid = run_study("grid", {"space": space, "base": base, "trials": points, "sampler": "grid",
                                  "pruner": "none"}, folder, args.data)
        grid_s = time.perf_counter() - t0
        best = max(r.value for r in grid if r.value is not None)
        grid_epochs = sum(r.epochs for r in grid)
        print(f"grid: {points} points x {epochs} epochs = {grid_epochs} epochs, best validation accuracy "
              f"{100 * best:.1f}% ({grid_s:.1f} s)")
        used = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            rows = run_study(f"tpe{seed}", {"space": space, "base": base, "trials": max(2, points // 2),
                                            "sampler": "tpe", "pruner": "median", "seed": seed,
                                            "startup_trials": 2}, folder, args.data)
            epochs_used, reached = epochs_to_reach(rows, best - WITHIN)
            pruned = sum(r.state == "pruned" for r in rows)
            print(f"search seed {seed}: {len(rows)} trials ({pruned} pruned), {sum(r.epochs for r in rows)} epochs; "
                  f"{'reached' if reached else 'did NOT reach'} the grid's best (within 1 point) after "
                  f"{epochs_used} epochs ({time.perf_counter() - t0:.1f} s)")
            used.append(epochs_used if reached else epochs_used + grid_epochs)  # not reached: it would need the grid too
    median = statistics.median(used)
    print(f"search: median {median:g} epochs to reach the grid's best, over {args.seeds} seeds; grid: {grid_epochs}")
    print(f"epochs_ratio: {median / grid_epochs:.2f} (search reached the grid's best in {median / grid_epochs:.2f} "
          f"of the grid's epochs)")


if __name__ == "__main__":
    main()
