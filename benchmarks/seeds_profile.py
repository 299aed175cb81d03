"""Where a training step of the study base goes, grouped (5 seeds) and alone: torch profiler
self CPU time by operator class, to bound what grouping can save on a CPU.

Grouping removes per-run Python, autograd bookkeeping and small-operator launches; it cannot
shrink the matrix products (forward and backward) or the optimizer's passes over the weights,
which each member needs in full. If those take a share `a` of a lone step, G members grouped
take at least G * a of G lone steps' time: the speedup is at most 1 / a (Amdahl).

    python benchmarks/seeds_profile.py [--seeds 5] [--clips 2000] [--threads 1]

Prints the operator table of each side and ends with
`bound: grouping can gain at most <ratio>x (products and optimizer: <share>% of a lone step)`.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import run_config, synthetic  # noqa: E402

from engine.batched import train_group  # noqa: E402
from engine.train import train_run  # noqa: E402

GEMM = ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear")  # matrix products (forward; backward runs these too)
OPTIM = ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")  # the optimizer's elementwise passes


def classify(name: str) -> str:
    op = name.split("::")[-1].lower()
    if op in GEMM:
        return "matrix products"
    if any(op.startswith(p) or p in op for p in OPTIM):
        return "optimizer"
    return "everything else"


def profile_side(fn) -> tuple[float, dict[str, float]]:
    """Total self CPU seconds of `fn()` and their split by `classify` (aten operators only)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            shares[classify(event.key)] += event.self_cpu_time_total / 1e6
    return sum(shares.values()), dict(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--clips", type=int, default=2000, help="training clips (batch 100: clips / 100 steps per epoch)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {"training": synthetic(args.clips, 0), "validation": synthetic(200, 1)}
    configs = [run_config(1).with_values(**{"train.seed": s}) for s in range(args.seeds)]
    train_run(configs[0], data, device="cpu")  # warm-up
    lone_total, lone = profile_side(lambda: [train_run(c, data, device="cpu") for c in configs])
    group_total, grouped = profile_side(lambda: train_group(configs, data, device="cpu"))
    print(f"{args.seeds} seeds, {args.clips} clips, 1 epoch, {args.threads} thread(s); self CPU seconds of aten operators")
    print(f"{'class':<18}{'one after another':>20}{'grouped':>12}")
    for name in ("matrix products", "optimizer", "everything else"):
        print(f"{name:<18}{lone.get(name, 0.0):>20.2f}{grouped.get(name, 0.0):>12.2f}")
    print(f"{'total':<18}{lone_total:>20.2f}{group_total:>12.2f}")
    print(f"measured ratio (operator time): {lone_total / group_total:.2f}x")
    fixed = lone.get("matrix products", 0.0) + lone.get("optimizer", 0.0)
    print(f"bound: grouping can gain at most {lone_total / fixed:.2f}x "
          f"(products and optimizer: {100 * fixed / lone_total:.0f}% of the lone runs' operator time)")


if __name__ == "__main__":
    main()
