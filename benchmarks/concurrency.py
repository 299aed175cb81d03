"""Aggregate training throughput of K runs at once vs one at a time, through the JobManager.

Four runs of the study's base configuration (on synthetic data shaped like the real training
split, 5,841 clips x 3 frames x 21 features) go through `engine.runs.jobs.JobManager` twice: with
max_concurrent=1 (the reference) and with max_concurrent=K. Throughput = epochs of all runs /
wall seconds. On a GPU each worker thread has its own CUDA stream, so runs overlap; on this
2-core CPU the runs share the same cores and the ratio stays near 1 (expected).

    python benchmarks/concurrency.py                       # CPU, 4 runs x 2 epochs
    python benchmarks/concurrency.py --device cuda --epochs 10
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.core.config import RunConfig  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402


@dataclass
class Split:  # the fields of engine.features.extract.FeatureSet
    x: np.ndarray  # (n, frames, features) float32
    y: np.ndarray  # (n,) int64
    ids: list[str]


def synthetic_data(train: int, val: int, seed: int = 0) -> dict[str, Split]:
    """Class-dependent Gaussian features shaped like the study's (3 frames x 21 values)."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        y = rng.integers(0, 8, n)
        x = rng.normal(size=(n, 3, 21)).astype(np.float32) + y[:, None, None] * 0.1
        return Split(x.astype(np.float32), y.astype(np.int64), [f"c{k}" for k in range(n)])

    return {"training": split(train), "validation": split(val)}


def throughput(concurrent: int, runs: int, config: RunConfig, data: dict, device: str) -> float:
    """Epochs per second over `runs` runs trained `concurrent` at a time."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as folder:
        store = RunStore(Path(folder) / "runs.sqlite", Path(folder) / "runs")
        manager = JobManager(store, max_concurrent=concurrent, data_loader=lambda _: data, device=device,
                             group_runs=False)  # separate runs: what this measures (groups: benchmarks/seeds.py)
        start = time.perf_counter()
        ids = [manager.submit(config, name=f"bench {k}") for k in range(runs)]
        manager.wait(ids)
        seconds = time.perf_counter() - start
        manager.shutdown()
        records = [store.get(i) for i in ids]
        store.close()
    if {r.status for r in records} != {"finished"}:
        raise SystemExit(f"runs ended {sorted({r.status for r in records})}: {[r.error for r in records]}")
    return runs * config.train.epochs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clips", type=int, default=5841)
    args = parser.parse_args()

    data = synthetic_data(args.clips, args.clips // 2)
    config = RunConfig().with_values(**{"train.epochs": args.epochs})
    throughput(1, 1, config.with_values(**{"train.epochs": 1}), data, args.device)  # warm-up: imports, kernels
    one = throughput(1, args.runs, config, data, args.device)
    many = throughput(args.concurrent, args.runs, config, data, args.device)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.runs} runs x {args.epochs} epochs, "
          f"{args.clips} training clips, study base configuration")
    print(f"1 at a time:           {one:.2f} epochs/s")
    print(f"{args.concurrent} at a time:           {many:.2f} epochs/s")
    print(f"peak RSS (process):    {rss_mib:.0f} MiB")
    if args.device.startswith("cuda"):
        print(f"peak CUDA allocated:   {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"speedup: {many / one:.2f}x")


if __name__ == "__main__":
    main()
