"""Feature extraction speed: our load_features against the study's per-file librosa loop.

    python benchmarks/features.py                      # demo dataset, 200 clips, CPU
    python benchmarks/features.py --data ~/mir_datasets/medley_solos_db --clips 1000 --device cuda

Both sides compute the study's 21 features (13 MFCC, centroid, 7 contrast) for every frame
of the same clips in the same run. Ours: `engine.features.load_features` with a fresh, empty
cache folder each repeat (auto backend: threaded decoding + batched torch features). The
reference: one process, per file `librosa.load(path)` then the three librosa feature calls,
as the study's code did. Figures: median clips/second over the repeats (one untimed warm-up
of ours first: imports and filter tables), the cached reload time, the largest difference
between the two, peak memory. The last line is `speedup: <ratio>x`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import FeatureConfig  # noqa: E402
from engine.dataset import MedleyDataset, resolve_dataset  # noqa: E402
from engine.features import _resolve_backend, load_features  # noqa: E402

REFERENCE_BUDGET_S = 120.0  # no further reference repeat once its repeats took this long in all


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="demo", help="dataset folder, or demo / demo:tiny / demo:full (default demo)")
    parser.add_argument("--clips", type=int, default=200, help="clips to process (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device for our extractor: cpu, cuda, ...")
    parser.add_argument("--memory-clips", type=int, default=50, help="clips for the tracemalloc pass (0: skip)")
    return parser.parse_args()


def first_clips(ds: MedleyDataset, n: int) -> MedleyDataset:
    """A copy of ds with its first n clips taken round-robin over the splits (so every split has some)."""
    by_split = [[c for c in ds.clips if c.subset == s] for s in ("training", "validation", "test")]
    chosen = []
    while len(chosen) < n and any(by_split):
        for clips in by_split:
            if clips and len(chosen) < n:
                chosen.append(clips.pop(0))
    return replace(ds, clips=chosen, problems=[], _fingerprint=None)


def ours(ds: MedleyDataset, config: FeatureConfig, device: str) -> np.ndarray:
    """All features of ds's clips, splits concatenated in clip order: (n, 129, 21)."""
    data = load_features(ds, config, device=device)
    return reorder(ds, {uuid: x for fs in data.values() for uuid, x in zip(fs.ids, fs.x)})


def reference(ds: MedleyDataset) -> np.ndarray:
    """The study's way: per file librosa.load + mfcc + spectral_centroid + spectral_contrast."""
    import librosa

    out = []
    for clip in ds.clips:
        y, sr = librosa.load(clip.path)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13)
        centroid = librosa.feature.spectral_centroid(y=y, sr=sr)
        contrast = librosa.feature.spectral_contrast(y=y, sr=sr)
        out.append(np.concatenate([mfcc, centroid, contrast]).T)
    return np.stack(out)


def reorder(ds: MedleyDataset, by_uuid: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([by_uuid[clip.uuid] for clip in ds.clips])


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def with_fresh_cache(function, *args):
    """Run function with $MEDLEY_CACHE pointing at a new empty folder."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        os.environ["MEDLEY_CACHE"] = folder
        return function(*args)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def traced_peak_mb(function, *args) -> float:
    """Peak Python-heap (numpy included, torch excluded) allocation of one call, in MB."""
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main() -> None:
    args = parse_args()
    config = FeatureConfig(frames=None)
    full = resolve_dataset(args.data, progress=None)
    ds = first_clips(full, args.clips)
    n = len(ds.clips)
    backend = _resolve_backend("auto")
    print(f"dataset {full.root} ({len(full.clips)} clips), using {n}; backend {backend} on {args.device}; "
          f"{os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}")

    with_fresh_cache(ours, first_clips(full, min(n, 8)), config, args.device)  # warm-up, untimed
    our_times, our_x = [], None
    for _ in range(args.repeats):
        seconds, our_x = with_fresh_cache(timed, ours, ds, config, args.device)
        our_times.append(seconds)
    rss_ours = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        os.environ["MEDLEY_CACHE"] = folder
        ours(ds, config, args.device)
        cached_s, _ = timed(ours, ds, config, args.device)

    ref_times, ref_x = [], None
    for _ in range(args.repeats):
        seconds, ref_x = timed(reference, ds)
        ref_times.append(seconds)
        if sum(ref_times) > REFERENCE_BUDGET_S:
            break
    rss_all = peak_rss_mb()

    our_rate, ref_rate = n / statistics.median(our_times), n / statistics.median(ref_times)
    print(f"ours:      {our_rate:8.1f} clips/s  (median of {len(our_times)}: {', '.join(f'{t:.2f}' for t in our_times)} s)")
    print(f"reference: {ref_rate:8.1f} clips/s  (median of {len(ref_times)}: {', '.join(f'{t:.2f}' for t in ref_times)} s)")
    print(f"cached reload of the same {n} clips: {cached_s:.3f} s")
    report_differences(our_x, ref_x)
    print(f"peak RSS of this process: {rss_ours:.0f} MB after ours, {rss_all:.0f} MB after the reference")
    if args.memory_clips > 0:
        small = first_clips(full, min(n, args.memory_clips))
        ours_mb = with_fresh_cache(traced_peak_mb, ours, small, config, args.device)
        ref_mb = traced_peak_mb(reference, small)
        print(f"tracemalloc peak on {len(small.clips)} clips: ours {ours_mb:.1f} MB, reference {ref_mb:.1f} MB")
    print(f"speedup: {our_rate / ref_rate:.1f}x")


def report_differences(ours_x: np.ndarray, ref_x: np.ndarray) -> None:
    """Largest relative difference per feature group, relative to each feature's largest |value|."""
    scale = np.abs(ref_x).max(axis=(0, 1))
    relative = np.abs(ours_x - ref_x).max(axis=(0, 1)) / np.maximum(scale, 1e-12)
    groups = {"mfcc": slice(0, 13), "centroid": slice(13, 14), "contrast": slice(14, 21)}
    print("max |ours - reference| / max |reference|: "
          + ", ".join(f"{name} {relative[s].max():.1e}" for name, s in groups.items()))


if __name__ == "__main__":
    main()
