"""The study's 2019 resampler (resampy "kaiser_best", FeatureConfig(inputs="librosa_0.7")):
engine.data.audio's decimation loop against resampy itself, on 3-second clips at 44.1 kHz.

Both give bit-identical samples (checked here on every clip); the figure is the median time
per clip and the ratio resampy / ours, measured in the same run. soxr (the current inputs'
resampler) is shown for scale.

    python benchmarks/resample.py            # 20 clips
    python benchmarks/resample.py --clips 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.data.audio import resample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    args = parser.parse_args()
    import resampy

    rng = np.random.default_rng(0)
    clips = [(0.3 * rng.standard_normal(131072)).astype(np.float32) for _ in range(args.clips)]
    resample(clips[0], 44100, 22050, method="kaiser_best")  # compile / warm up
    resampy.resample(clips[0], 44100, 22050, filter="kaiser_best")
    times: dict[str, list[float]] = {"ours": [], "resampy": [], "soxr": []}
    for y in clips:
        start = time.perf_counter()
        ours = resample(y, 44100, 22050, method="kaiser_best")
        times["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = resampy.resample(y, 44100, 22050, filter="kaiser_best")
        times["resampy"].append(time.perf_counter() - start)
        start = time.perf_counter()
        resample(y, 44100, 22050, method="soxr_hq")
        times["soxr"].append(time.perf_counter() - start)
        assert np.array_equal(ours, ref), "not bit-identical to resampy"
    median = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"{args.clips} clips of 131,072 samples, 44.1 -> 22.05 kHz, median ms per clip:")
    for name, ms in median.items():
        print(f"  {name:<8} {ms:8.2f}")
    print(f"resampy / ours: {median['resampy'] / median['ours']:.1f}x (bit-identical output)")


if __name__ == "__main__":
    main()
