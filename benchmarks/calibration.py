"""Calibration and power of the Compare page's group test, the figures docs/GUIDE.md quotes.

Runs tests/test_stats.py's simulation (per-clip difficulty, per-seed offsets on the logit
scale, 200 clips) and prints the false-positive rate at alpha 0.05 for each group size and
level of seed variation, McNemar's rate for 1 v 1 with and without seed variation, and the
power for a +8.5-point effect. About 20 s of CPU.

    python benchmarks/calibration.py
    python benchmarks/calibration.py --null 100 --power 50   # a check that it runs, not figures
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from engine.compare.stats import seed_level_test  # noqa: E402
from test_stats import N_NULL, N_POWER, mcnemar_p_batch, simulate  # noqa: E402

SIZES = [(1, 2), (1, 4), (2, 2), (2, 3), (3, 3), (3, 5), (5, 5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null", type=int, default=N_NULL, help=f"null comparisons per case (default {N_NULL})")
    parser.add_argument("--power", type=int, default=N_POWER, help=f"simulations per power case (default {N_POWER})")
    args = parser.parse_args()
    n_null, n_power = args.null, args.power
    se = (0.05 * 0.95 / n_null) ** 0.5
    print(f"false-positive rate at alpha 0.05, {n_null} null comparisons each (Monte-Carlo SE {se:.3f})")
    worst = 0.0
    for tau in (0.0, 0.15, 0.4):
        rates = []
        for k_a, k_b in SIZES:
            ca, cb = simulate(k_a, k_b, n_null, tau=tau, seed=k_a * 10 + k_b)
            rate = float(np.mean(seed_level_test(ca, cb)["p_value"] < 0.05))
            worst = max(worst, rate)
            rates.append(f"{k_a}v{k_b} {rate:.3f}")
        print(f"  seed sd {tau:<4} (logit): " + "  ".join(rates))
    print(f"  worst: {worst:.3f}")
    for tau, seed in ((0.0, 11), (0.4, 12)):
        ca, cb = simulate(1, 1, n_null, tau=tau, seed=seed)
        rate = float(np.mean(mcnemar_p_batch(ca[:, 0], cb[:, 0]) < 0.05))
        print(f"1 v 1, McNemar, seed sd {tau}: {rate:.3f} of same-configuration pairs called different")
    for k_a, k_b in ((3, 3), (3, 5), (5, 5)):
        ca, cb = simulate(k_a, k_b, n_power, effect=0.5, seed=3)
        r = seed_level_test(ca, cb)
        power = float(np.mean((r["p_value"] < 0.05) & (r["difference"] > 0)))
        print(f"power {k_a} v {k_b}: {power:.2f} for a {100 * (cb.mean() - ca.mean()):+.1f}-point effect "
              f"(seed spread {100 * r['spread_a'].mean():.1f} points, {n_power} simulations)")


if __name__ == "__main__":
    main()
