"""The same runs through the local backend (threads) and the ray backend (a local Ray), wall time.

Four runs of the study's base configuration (synthetic data shaped like the real training
split, as benchmarks/concurrency.py: 5,841 clips x 3 frames x 21 features; different seeds,
not grouped) go through `engine.runs.jobs.JobManager` with:

- local, 1 at a time (the CPU default; torch gets all cores but one),
- local, 2 at a time (threads of one process, sharing torch's threads and the GIL),
- ray, local cluster of `--ray-cpus` CPUs, 1 CPU per run (torch pinned to 1 thread a task),
  as many at once as the cluster holds.

Each setting runs `--repeats` times, alternating; the median wall time and the ratio against
local 1-at-a-time are printed, plus Ray's one-off costs (connect, first epoch reaching the
driver). The ray backend's worth is several GPUs or nodes; this measures its overhead on one
small machine.

    python benchmarks/ray_backend.py                 # 4 runs x 2 epochs, 3 repeats
    python benchmarks/ray_backend.py --runs 8 --epochs 3 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import synthetic_data  # noqa: E402

from engine.runs import ray_backend  # noqa: E402
from engine.core.config import RunConfig  # noqa: E402
from engine.features.extract import FeatureSet  # noqa: E402
from engine.runs.jobs import JobManager  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402


def wall(make: dict, runs: int, config: RunConfig, data: dict) -> tuple[float, float]:
    """(seconds for all runs, seconds until the first run's first epoch was in the store)."""
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as folder:
        store = RunStore(Path(folder) / "runs.sqlite", Path(folder) / "runs")
        manager = JobManager(store, data_loader=lambda _: data, group_runs=False, **make)
        start = time.perf_counter()
        ids = [manager.submit(config.with_values(**{"train.seed": k}), name=f"bench {k}") for k in range(runs)]
        first = None
        while not manager.wait(ids, timeout=0.05):
            if first is None and store.get(ids[0]).history:
                first = time.perf_counter() - start
        seconds = time.perf_counter() - start
        records = [store.get(i) for i in ids]
        manager.shutdown()
        store.close()
    if {r.status for r in records} != {"finished"}:
        raise SystemExit(f"runs ended {sorted({r.status for r in records})}: {[r.error for r in records]}")
    return seconds, first if first is not None else seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--clips", type=int, default=5841)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray")
    args = parser.parse_args()

    data = {split: FeatureSet(s.x, s.y, s.ids) for split, s in synthetic_data(args.clips, args.clips // 2).items()}
    config = RunConfig().with_values(**{"train.epochs": args.epochs})
    start = time.perf_counter()
    info = ray_backend.connect(ray_backend.RayOptions(local_cpus=args.ray_cpus))
    connect_s = time.perf_counter() - start
    settings = {
        "local, 1 at a time": {"backend": "local", "device": "cpu"},
        "local, 2 at a time": {"backend": "local", "device": "cpu", "max_concurrent": 2},
        f"ray, {args.ray_cpus} at a time": {"backend": "ray", "ray_options": ray_backend.RayOptions(local_cpus=args.ray_cpus)},
    }
    wall(settings[f"ray, {args.ray_cpus} at a time"], 1, config.with_values(**{"train.epochs": 1}), data)  # warm-up
    wall(settings["local, 1 at a time"], 1, config.with_values(**{"train.epochs": 1}), data)
    times: dict[str, list[float]] = {name: [] for name in settings}
    firsts: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.repeats):
        for name, make in settings.items():
            seconds, first = wall(make, args.runs, config, data)
            times[name].append(seconds)
            firsts[name].append(first)
    print(f"{args.runs} runs x {args.epochs} epochs, study base, {args.clips} training clips, {args.repeats} repeat(s); "
          f"driver torch threads {torch.get_num_threads()}, {os.cpu_count()} cores")
    print(f"ray: {info.describe()}, connect {connect_s:.1f} s (first ray.init in this process)")
    reference = statistics.median(times["local, 1 at a time"])
    for name in settings:
        median = statistics.median(times[name])
        print(f"{name:<22} median {median:6.1f} s  (all: {', '.join(f'{t:.1f}' for t in times[name])}), "
              f"first epoch stored after {statistics.median(firsts[name]):.1f} s, "
              f"{args.runs * args.epochs / median:.2f} epochs/s, ratio vs local 1 at a time: {reference / median:.2f}x")
    ray_backend.disconnect()


if __name__ == "__main__":
    main()
