"""Feature extraction speed: our load_features against the study's per-file librosa loop.

    python benchmarks/features.py                      # default demo dataset, 200 clips, CPU
    python benchmarks/features.py --size full --clips 2000   # demo:full (21,571 clips, made on demand)
    python benchmarks/features.py --data ~/mir_datasets/medley_solos_db --clips 1000 --device cuda

Both sides compute the study's 21 features (13 MFCC, centroid, 7 contrast) for every frame
of the same clips in the same run. Ours: `engine.features.extract.load_features` with a fresh, empty
cache folder each repeat (auto backend: threaded decoding + batched torch features). The
reference: one process, per file `librosa.load(path)` then the three librosa feature calls,
as the study's code did, with BLAS pinned to one thread (threadpoolctl) so that its speed
does not swing with the machine's load. Repeats alternate (ours, reference, ours, ...) so that load from
other processes on a shared machine hits both sides alike. Figures: median clips/second
(wall) and median CPU seconds per clip (process time: all threads) over the repeats, after
one untimed warm-up of each side (imports, filter tables, kernel compilation); the cached
reload time; the tolerance check (per clip and column, max|ours - librosa| / (max|librosa|
+ 1e-6): MFCC and centroid <= 1e-3, contrast <= 1e-2); the peak resident memory of each
side computing --memory-clips clips alone in a fresh child process (after its imports and a
2-clip warm-up), and what that work added. The last line is `speedup: <ratio>x`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.core.config import FeatureConfig  # noqa: E402
from engine.data.dataset import MedleyDataset, resolve_dataset  # noqa: E402
from engine.features.extract import _resolve_backend, load_features  # noqa: E402

REFERENCE_BUDGET_S = 120.0  # no further reference repeat once its repeats took this long in all


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset folder, or demo / demo:tiny / demo:full (default: --size)")
    parser.add_argument("--size", choices=("default", "full"), default="default",
                        help="demo dataset when --data is not given: default (1,120 clips) or full (21,571, made on demand)")
    parser.add_argument("--clips", type=int, default=200, help="clips to process (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device for our extractor: cpu, cuda, ...")
    parser.add_argument("--memory-clips", type=int, default=100, help="clips for the peak-memory children (0: skip)")
    parser.add_argument("--side", choices=("ours", "reference"), help=argparse.SUPPRESS)  # child: peak memory
    return parser.parse_args()


def require_clips(ds: MedleyDataset, n: int) -> None:
    """Exit with status 1 and a message when `ds` holds fewer than the `n` clips asked for:
    a figure over fewer clips than the command says would not be the figure it names."""
    if len(ds.clips) < n:
        raise SystemExit(f"dataset {ds.root} is too small for this benchmark: it has {len(ds.clips)} clips, "
                         f"--clips asks for {n}; pass --clips {len(ds.clips)} or a larger dataset (--size full)")


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
    """The study's way: per file librosa.load + mfcc + spectral_centroid + spectral_contrast.

    BLAS/OpenMP pools pinned to one thread (threadpoolctl): left free, numpy's BLAS in the
    mel and DCT products swung this loop's speed 3-7x with the machine's load."""
    import librosa
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _reference_loop(ds, librosa)


def _reference_loop(ds: MedleyDataset, librosa) -> np.ndarray:
    out = []
    for clip in ds.clips:
        y, sr = librosa.load(clip.path)
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13)
        centroid = librosa.feature.spectral_centroid(y=y, sr=sr)
        contrast = librosa.feature.spectral_contrast(y=y, sr=sr)
        out.append(np.concatenate([mfcc, centroid, contrast]).T)
    return np.stack(out)


def cached_reload_seconds(ds: MedleyDataset, config: FeatureConfig, device: str) -> float:
    """Wall seconds of a second `ours` call, which reads what the first one cached."""
    ours(ds, config, device)
    return timed(ours, ds, config, device)[0]


def reorder(ds: MedleyDataset, by_uuid: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([by_uuid[clip.uuid] for clip in ds.clips])


def timed(function, *args) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process's threads, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def with_fresh_cache(function, *args):
    """Run function with $MEDLEY_CACHE pointing at a new empty folder, then restore it.

    (Leaving it pointed at the deleted folder made the peak-memory children look for the demo
    dataset there and render it again.)"""
    before = os.environ.get("MEDLEY_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        os.environ["MEDLEY_CACHE"] = folder
        try:
            return function(*args)
        finally:
            if before is None:
                os.environ.pop("MEDLEY_CACHE", None)
            else:
                os.environ["MEDLEY_CACHE"] = before


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB: VmHWM, which reset_peak_rss restarts."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports kilobytes


def reset_peak_rss() -> bool:
    """Restart the peak-RSS mark at the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def side_peak_mb(args: argparse.Namespace, side: str) -> tuple[float, float]:
    """(peak RSS MB while computing, RSS MB before: imports and dataset) of one side on
    --memory-clips clips, in a fresh child process."""
    command = [sys.executable, __file__, "--side", side, "--data", str(args.root),
               "--clips", str(min(args.clips, args.memory_clips)), "--device", args.device]
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
    result = json.loads(lines[-1])
    return result["peak_rss_mb"], result["before_mb"]


def child(args: argparse.Namespace, config: FeatureConfig) -> None:
    """--side: compute one side once and print its peak RSS as JSON (run by side_peak_mb)."""
    full = resolve_dataset(dataset_name(args))
    ds, warm = first_clips(full, args.clips), first_clips(full, 2)
    run = (lambda d: with_fresh_cache(ours, d, config, args.device)) if args.side == "ours" else reference
    run(warm)  # imports, tables, compiled kernels: not part of the work measured
    baseline = current_rss_mb()
    if not reset_peak_rss():
        baseline = peak_rss_mb()
    run(ds)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "before_mb": baseline}))


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB (0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def dataset_name(args: argparse.Namespace) -> str:
    return args.data if args.data else f"demo:{args.size}"


def main() -> None:
    args = parse_args()
    config = FeatureConfig(frames=None)
    if args.side:
        child(args, config)
        return
    full = resolve_dataset(dataset_name(args), progress=None)
    args.root = full.root  # the children read this folder, whatever their cache
    require_clips(full, args.clips)
    ds = first_clips(full, args.clips)
    n = len(ds.clips)
    backend = _resolve_backend("auto")
    print(f"dataset {full.root} ({len(full.clips)} clips), using {n}; backend {backend} on {args.device}; "
          f"{os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}")

    warm = first_clips(full, min(n, 8))
    with_fresh_cache(ours, warm, config, args.device)  # warm-ups, untimed
    reference(warm)
    our_runs, ref_runs, our_x, ref_x = [], [], None, None
    for _ in range(args.repeats):
        *run, our_x = with_fresh_cache(timed, ours, ds, config, args.device)
        our_runs.append(run)
        if sum(r[0] for r in ref_runs) <= REFERENCE_BUDGET_S:
            *run, ref_x = timed(reference, ds)
            ref_runs.append(run)
    cached_s = with_fresh_cache(cached_reload_seconds, ds, config, args.device)

    our_rate = n / statistics.median(r[0] for r in our_runs)
    ref_rate = n / statistics.median(r[0] for r in ref_runs)
    for name, rate, runs in (("ours", our_rate, our_runs), ("reference", ref_rate, ref_runs)):
        cpu_ms = 1e3 * statistics.median(r[1] for r in runs) / n
        walls = ", ".join(f"{r[0]:.2f}" for r in runs)
        print(f"{name + ':':11s}{rate:8.1f} clips/s  CPU {cpu_ms:6.2f} ms/clip  (wall s of {len(runs)} repeats: {walls})")
    print(f"cached reload of the same {n} clips: {cached_s:.3f} s")
    cpu_ratio = statistics.median(r[1] for r in ref_runs) / statistics.median(r[1] for r in our_runs)
    print(f"CPU-time ratio (reference / ours, all threads of the process): {cpu_ratio:.1f}x; "
          f"wall ratio below (reference pinned to 1 BLAS thread, ours free)")
    report_differences(our_x, ref_x)
    if args.memory_clips > 0:
        m = min(n, args.memory_clips)
        (our_peak, our_base), (ref_peak, ref_base) = side_peak_mb(args, "ours"), side_peak_mb(args, "reference")
        print(f"peak RSS while computing {m} clips, each side alone in a fresh process after a 2-clip warm-up: "
              f"ours {our_peak:.0f} MB (+{our_peak - our_base:.0f} over imports and warm-up), "
              f"reference {ref_peak:.0f} MB (+{ref_peak - ref_base:.0f})")
    print(f"speedup: {our_rate / ref_rate:.1f}x")


def report_differences(ours_x: np.ndarray, ref_x: np.ndarray) -> None:
    """Worst error per feature group, per clip and column as the tests measure it, vs the limits."""
    err = np.abs(ours_x - ref_x).max(axis=1) / (np.abs(ref_x).max(axis=1) + 1e-6)  # (clips, 21)
    groups = {"mfcc": (slice(0, 13), 1e-3), "centroid": (slice(13, 14), 1e-3), "contrast": (slice(14, 21), 1e-2)}
    parts = [f"{name} {err[:, s].max():.1e} (limit {limit:.0e})" for name, (s, limit) in groups.items()]
    ok = all(err[:, s].max() <= limit for s, limit in groups.values())
    print("max per clip and column |ours - librosa| / (max |librosa| + 1e-6): "
          + ", ".join(parts) + (" OK" if ok else " EXCEEDED"))


if __name__ == "__main__":
    main()
