"""Clips -> (frames, features) matrices, cached on disk.

Spectral representation (the study's features, librosa at 22,050 Hz, n_fft 2048, hop 512,
129 frames per 65,536-sample clip). Per frame, in this order:

    [0:13]   librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13)
    [13]     librosa.feature.spectral_centroid(y=y, sr=sr)          (Hz)
    [14:21]  librosa.feature.spectral_contrast(y=y, sr=sr)          (dB, 7 bands)
    [21:33]  librosa.feature.chroma_stft(y=y, sr=sr)                if config.chroma
    then     librosa.feature.delta of all rows above (whole clip)   if config.deltas

"logmel": per frame the 128 slaney mel bands in dB (librosa.power_to_db(melspectrogram)), "pcen":
the same bands through engine.features.pcen (librosa.pcen); then chroma/deltas as above.
With `config.clip_norm` every clip's kept frames are normalised per feature (CMVN) after
loading: the cache holds the raw values.

Besides the clean splits, two variants of the audio are featurised and cached on their own
(the cache name carries the variant, so a transformed clip is never read as the clean one):
`load_heldout_validation` (the validation clips through engine.data.augment's held-out recording
chain: the cross-collection validation) and `load_augmented_views` (augmented copies of the
training clips, one file per view, named by the augmentations, their seed and the view).

Waveform representation: the fitted clip cut into `waveform_frame`-sample frames
(65,536 / 512 -> 128 frames of 512 samples), rounded to float16 precision everywhere
(relative error below 5e-4) so cached and fresh values are identical.

Two backends give the same features: "librosa" (the per-clip reference, in a process pool
for many clips) and "torch" (`engine.features.spectral.batch_spectral_features`, batched, CPU or
GPU; within 1e-3 of librosa). `backend="auto"` picks torch when engine.features.spectral imports.

Cache: `cache/features/<dataset fingerprint>-<config digest>-<backend>-<split>.npy` holds the
whole-clip features (config with frames=None), so every `frames` value shares one entry;
truncation happens after loading. Spectral entries are float32; waveform entries float16,
and a waveform split is not cached when it would exceed WAVEFORM_CACHE_BYTES.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core import paths
from ..data.audio import fit_to_length, load_audio
from ..data.augment import (AUGMENT_VERSION, HELDOUT_VERSION, SOURCE_VERSION, augment_clip, clip_seed, heldout_chain,
                      heldout_source)
from ..core.config import FeatureConfig
from ..data.dataset import PROGRAM_VIEW, Clip, MedleyDataset
from ..core.errors import ConfigError
from ..core.labels import SUBSETS
from ..core.processes import spawn_context
from ..core.space import check_space, disk_full_error, is_disk_full
from .pcen import pcen_mel

Progress = Callable[[int, int, str], None]

BACKENDS = ("auto", "torch", "librosa")
CHUNK_CLIPS = 128  # clips decoded and featurised together on a GPU: ~32 MB of audio
DECODE_WORKERS = 4  # threads: soundfile and soxr release the GIL
CPU_TASK_CLIPS = 4  # CPU: clips per task (decode + features in one thread, stays in cache)
CPU_WORKERS = max(1, min(os.cpu_count() or 1, 8))  # CPU: threads, one task each at a time
LIBROSA_WORKERS = 2  # processes for the librosa backend
PROCESS_POOL_MIN_CLIPS = 64  # fewer clips than this: the librosa backend runs in-process
WAVEFORM_CACHE_BYTES = 1 << 30  # waveform splits bigger than this (as float16) are not cached
STD_FLOOR = 1e-6  # smallest std used to scale a feature


@dataclass(frozen=True)
class AudioVariant:
    """What is done to a decoded clip before its features: nothing ("clean"), the held-out
    recording chain ("heldout"), the held-out source change then that chain ("source"), or
    one augmented view ("augmented": `names` with `seed`, view
    `view`). Every clip's randomness comes from its uuid, so the result is independent of order."""

    kind: str = "clean"
    names: tuple[str, ...] = ()
    seed: int = 0
    view: int = 0

    def tag(self) -> str:
        """The variant's part of a cache file name ("" for clean audio)."""
        if self.kind == "clean":
            return ""
        if self.kind == "heldout":
            return f"heldout{HELDOUT_VERSION}-"
        if self.kind == "source":
            return f"source{SOURCE_VERSION}-heldout{HELDOUT_VERSION}-"
        return f"aug{AUGMENT_VERSION}-{'.'.join(self.names)}-s{self.seed}-v{self.view}-"

    def apply(self, y: np.ndarray, sr: int, uuid: str) -> np.ndarray:
        """y (samples,) float32 at sr Hz -> the variant's audio, same shape."""
        if self.kind == "clean":
            return y
        if self.kind == "heldout":
            return heldout_chain(y, sr, uuid)
        if self.kind == "source":
            return heldout_chain(heldout_source(y, sr, uuid), sr, uuid)
        rng = np.random.default_rng(clip_seed(uuid, self.seed * 1_000_003 + self.view))
        return augment_clip(y, sr, self.names, rng)


CLEAN = AudioVariant()
HELDOUT = AudioVariant("heldout")
SOURCE = AudioVariant("source")


@dataclass
class FeatureSet:
    """One split's features: x (n, frames, features) float32, y (n,) int64 class ids, ids uuids."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]


# --- one clip ------------------------------------------------------------------------------


def clip_features(y: np.ndarray, config: FeatureConfig, *, backend: str = "auto") -> np.ndarray:
    """Features of one mono clip at config.sample_rate: (config.num_frames, config.feature_dim) float32.

    `y` is zero-padded or cut to config.clip_samples first. Used for uploads at prediction time,
    so `backend="auto"` matches what `load_features` uses for training data.
    """
    y = fit_to_length(np.asarray(y, dtype=np.float32), config.clip_samples)
    if config.representation == "waveform":
        full = waveform_frames(y, config)
    elif _resolve_backend(backend) == "torch":
        full = _torch_features(y[None, :], config, "cpu")[0]
    else:
        full = librosa_features(y, config)
    return _finish_frames(full[None, : config.num_frames], config)[0]


def normalize_clips(x: np.ndarray) -> np.ndarray:
    """Per-clip mean and variance normalisation (CMVN): x (n, frames, features) -> same shape float32.

    Each clip's features are centred on their mean over its frames and divided by their std
    (floored at STD_FLOOR; a constant feature becomes 0). Removes a fixed channel gain/EQ
    from dB-scaled features such as MFCC and log-mel.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:  # no clips or no frames: nothing to normalise, the same empty shape back
        return x.copy()
    mean = x.mean(axis=1, keepdims=True, dtype=np.float64)
    std = np.maximum(x.std(axis=1, keepdims=True, dtype=np.float64), STD_FLOOR)
    return ((x - mean) / std).astype(np.float32)


def _finish_frames(x: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Kept frames (n, num_frames, dim) as the model sees them: CMVN when config.clip_norm."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return normalize_clips(x) if config.clip_norm else x


def librosa_features(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The reference spectral features of one fitted clip: (config.total_frames, feature_dim) float32.

    One STFT is shared by all features; the values equal separate librosa calls with y.
    """
    import librosa

    sr, n_fft, hop = config.sample_rate, config.n_fft, config.hop_length
    magnitude = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, pad_mode=config.pad_mode))
    power = magnitude**2
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_fft=n_fft, hop_length=hop)
    rows = [pcen_mel(mel, sr, hop) if config.representation == "pcen" else librosa.power_to_db(mel)]
    if not config.is_mel_bands:  # spectral: MFCC of the dB bands, centroid, contrast
        rows = [librosa.feature.mfcc(S=rows[0], sr=sr, n_mfcc=config.n_mfcc),
                librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=n_fft, hop_length=hop),
                librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_fft=n_fft, hop_length=hop)]
    if config.chroma:
        rows.append(librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft, hop_length=hop))
    features = np.concatenate(rows, axis=0)
    if config.deltas:
        features = np.concatenate([features, librosa.feature.delta(features)], axis=0)
    return features.T.astype(np.float32)


def waveform_frames(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """A fitted clip as (config.total_frames, waveform_frame) float32 samples at float16 precision."""
    usable = config.total_frames * config.waveform_frame
    frames = fit_to_length(y, config.clip_samples)[:usable].reshape(-1, config.waveform_frame)
    return frames.astype(np.float16).astype(np.float32)


def decode_clip(path: Path | str, config: FeatureConfig, start: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """A dataset file (or its window of `seconds` from `start`, engine.data.dataset.Clip) as mono
    float32 at config.sample_rate, fitted to (config.clip_samples,)."""
    y = load_audio(path, sr=config.sample_rate, resampler=config.resampler, offset=start, duration=seconds)
    return fit_to_length(y, config.clip_samples)


# --- a dataset -----------------------------------------------------------------------------


def load_features(
    ds: MedleyDataset,
    config: FeatureConfig,
    *,
    progress: Progress | None = None,
    backend: str = "auto",
    device: str = "cpu",
    use_cache: bool = True,
) -> dict[str, FeatureSet]:
    """Features of every split: {"training", "validation", "test"} -> FeatureSet.

    x is (n, config.num_frames, config.feature_dim) float32 in the split's CSV order.
    Cached per (ds.fingerprint(), whole-clip config, backend, split); a missing or corrupt
    entry is computed (audio decoded in threads, features on `device` with the torch backend).
    """
    backend = _resolve_backend(backend)
    total = len(ds.clips)
    done = 0
    result: dict[str, FeatureSet] = {}
    for split in SUBSETS:
        clips = ds.subset(split)

        def report(n: int, split: str = split, offset: int = done) -> None:
            if progress is not None:
                progress(offset + n, total, f"features {split}: {n}/{len(clips)} clips")

        x = _split_features(ds, split, clips, config, backend, device, use_cache, report)
        result[split] = _feature_set(x, clips)
        done += len(clips)
    return result


def load_heldout_validation(
    ds: MedleyDataset, config: FeatureConfig, *, progress: Progress | None = None, backend: str = "auto",
    device: str = "cpu", use_cache: bool = True,
) -> FeatureSet:
    """The cross-collection validation: the validation clips passed through the held-out
    recording chain (engine.data.augment.heldout_chain), featurised like load_features' splits.

    Never touches the test split. x (n_validation, num_frames, feature_dim) float32, cached.
    """
    return _validation_view(ds, config, HELDOUT, "held-out chain", progress, backend, device, use_cache)


def load_source_validation(
    ds: MedleyDataset, config: FeatureConfig, *, progress: Progress | None = None, backend: str = "auto",
    device: str = "cpu", use_cache: bool = True,
) -> FeatureSet:
    """The cross-collection validation of the source: the validation clips through the held-out
    source change (engine.data.augment.heldout_source: formants and pitch moved) and then the
    held-out recording chain, featurised like load_features' splits.

    Never touches the test split. x (n_validation, num_frames, feature_dim) float32, cached.
    """
    return _validation_view(ds, config, SOURCE, "held-out source and chain", progress, backend, device, use_cache)


def load_program_validation(
    ds: MedleyDataset, config: FeatureConfig, *, progress: Progress | None = None, backend: str = "auto",
    device: str = "cpu", use_cache: bool = True,
) -> FeatureSet | None:
    """The cross-collection validation of the program (demo only): songs played by GM programs
    that no training or validation song plays (engine.data.demo, `ds.program_view`), featurised like
    load_features' splits. None when the dataset has no such clips (the real Medley-solos-DB:
    dataset.PROGRAM_VIEW_MISSING says why).

    Never touches the test split. x (n_view, num_frames, feature_dim) float32, cached apart.
    """
    clips = ds.program_view
    if not clips:
        return None
    report = _reporter(progress, len(clips), "features validation (held-out programs)")
    x = _split_features(ds, PROGRAM_VIEW, clips, config, _resolve_backend(backend), device, use_cache, report)
    return _feature_set(x, clips)


def _validation_view(ds: MedleyDataset, config: FeatureConfig, variant: AudioVariant, what: str,
                     progress: Progress | None, backend: str, device: str, use_cache: bool) -> FeatureSet:
    """The validation clips' features with their audio changed by `variant` (never test)."""
    clips = ds.subset("validation")
    report = _reporter(progress, len(clips), f"features validation ({what})")
    x = _split_features(ds, "validation", clips, config, _resolve_backend(backend), device, use_cache, report, variant)
    return _feature_set(x, clips)


def load_augmented_views(
    ds: MedleyDataset, config: FeatureConfig, names: Sequence[str], views: int, seed: int, *,
    progress: Progress | None = None, backend: str = "auto", device: str = "cpu", use_cache: bool = True,
) -> np.ndarray:
    """`views` augmented copies of the training clips: (views, n_training, num_frames, feature_dim) float32.

    View v of clip c is augment_clip(audio of c) with a generator seeded by (c's uuid, seed, v);
    each view is cached under a name that holds the augmentations, the seed and v.
    """
    clips = ds.subset("training")
    variants = [AudioVariant("augmented", tuple(names), int(seed), view) for view in range(views)]
    out = np.empty((views, len(clips), config.num_frames, config.feature_dim), dtype=np.float32)
    for view, variant in enumerate(variants):
        report = _reporter(progress, len(clips), f"augmented training view {view + 1}/{views}")
        out[view] = _split_features(ds, "training", clips, config, _resolve_backend(backend), device, use_cache,
                                    report, variant)
    return out


def _feature_set(x: np.ndarray, clips: list[Clip]) -> FeatureSet:
    return FeatureSet(x=x, y=np.array([clip.label for clip in clips], dtype=np.int64), ids=[clip.uuid for clip in clips])


def _reporter(progress: Progress | None, total: int, message: str) -> Callable[[int], None]:
    def report(n: int) -> None:
        if progress is not None:
            progress(n, total, f"{message}: {n}/{total} clips")
    return report


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over clips and frames of x (n, frames, features).

    Accumulates in float64 over chunks of clips (no full-size float64 copy). Returns two
    (features,) float32 arrays; std is floored at STD_FLOOR so constant features divide safely.
    """
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ConfigError(f"no clips to fit a standardizer on: the features have shape {tuple(x.shape)} "
                          "(clips, frames, features); the training split needs at least one clip of one frame")
    chunks = range(0, len(x), 256)
    count = x.shape[0] * x.shape[1]
    mean = sum(x[i:i + 256].sum(axis=(0, 1), dtype=np.float64) for i in chunks) / count
    var = sum(((x[i:i + 256] - mean) ** 2).sum(axis=(0, 1)) for i in chunks) / count
    return mean.astype(np.float32), np.maximum(np.sqrt(var), STD_FLOOR).astype(np.float32)


def cache_path(ds: MedleyDataset, config: FeatureConfig, split: str, backend: str = "auto",
               variant: AudioVariant = CLEAN) -> Path:
    """The cache file of one split's whole-clip, un-normalised features of the audio `variant`."""
    whole = replace(config, frames=None, clip_norm=False)
    producer = "raw" if config.representation == "waveform" else _resolve_backend(backend)
    name = f"{ds.fingerprint()}-{whole.digest()}-{producer}-{variant.tag()}{split}.npy"
    return paths.cache_dir("features") / name


# --- per split: cache or compute -----------------------------------------------------------


def _split_features(
    ds: MedleyDataset,
    split: str,
    clips: list[Clip],
    config: FeatureConfig,
    backend: str,
    device: str,
    use_cache: bool,
    report: Callable[[int], None],
    variant: AudioVariant = CLEAN,
) -> np.ndarray:
    """(n, config.num_frames, feature_dim) float32 for `clips` (their audio changed by `variant`),
    from the cache when possible; CMVN applied when config.clip_norm."""
    whole = replace(config, frames=None, clip_norm=False)
    shape = (len(clips), whole.total_frames, whole.feature_dim)
    storage = np.float16 if config.representation == "waveform" else np.float32
    cacheable = use_cache and np.prod(shape) * np.dtype(storage).itemsize <= _cache_limit(config)
    path = cache_path(ds, config, split, backend, variant) if cacheable else None
    cached = _read_cache(path, shape, storage) if path is not None else None
    if cached is not None:
        report(len(clips))
        return _finish_frames(cached[:, : config.num_frames], config)
    if path is not None:  # a cache miss: refuse before extracting, not after
        check_space(path.parent, int(np.prod(shape)) * np.dtype(storage).itemsize, f"caching the {split} features")
    target = whole if cacheable else replace(config, clip_norm=False)  # uncached: only the frames we keep
    windows = {"spans": [(clip.start, clip.seconds) for clip in clips]} if any(
        clip.seconds is not None for clip in clips) else {}  # clips that are windows of a file (engine.data.folders)
    x = _extract([clip.path for clip in clips], target, backend, device, report,
                 [clip.uuid for clip in clips], variant, **windows)
    if path is not None:
        _write_cache(path, x.astype(storage, copy=False))
    return _finish_frames(x[:, : config.num_frames], config)


def _cache_limit(config: FeatureConfig) -> float:
    return WAVEFORM_CACHE_BYTES if config.representation == "waveform" else float("inf")


def _read_cache(path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray | None:
    """The cached array, read into memory, if `path` holds one of this shape and dtype whose
    data matches the checksum in its sidecar (`<name>.sum`), else None.

    Read, not memory-mapped: a cache file truncated or rewritten while a run uses it cannot
    reach the run (a memory map would die with SIGBUS). A corrupt, mismatched or unverified
    file is deleted so that it is recomputed.
    """
    if not path.exists():
        return None
    try:
        expected = json.loads(_sum_path(path).read_text())
        x = _read_npy(path, shape, dtype)
        if expected == _checksum(x):
            return x
    except (OSError, ValueError, EOFError):
        pass
    path.unlink(missing_ok=True)
    _sum_path(path).unlink(missing_ok=True)
    return None


def _read_npy(path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """The (shape) array of `dtype` in the .npy file `path`, read into a new writable array.

    The header is checked as text instead of parsed: numpy parses it with ast.literal_eval,
    and on CPython 3.11 two threads using `ast` at once can fail with "SystemError: AST
    constructor recursion depth mismatch" (CPython gh-106905). Streamlit parses every page
    script with `ast` on each rerun, so a training thread must not. ValueError when the file
    does not hold exactly that array (other header, other size, truncated).
    """
    want = np.dtype(dtype)
    with open(path, "rb") as handle:
        prefix = handle.read(12)
        if len(prefix) < 10 or prefix[:6] != b"\x93NUMPY":
            raise ValueError(f"{path} is not a .npy file")
        size_bytes = 2 if prefix[6] == 1 else 4
        header_len = int.from_bytes(prefix[8:8 + size_bytes], "little")
        start = 8 + size_bytes + header_len
        handle.seek(8 + size_bytes)
        header = handle.read(header_len).decode("latin1")
        expected = (f"'descr': '{want.str}'", "'fortran_order': False", f"'shape': {tuple(shape)!r}")
        if not all(part in header for part in expected):
            raise ValueError(f"{path} holds another array than {shape} {want}")
        if os.fstat(handle.fileno()).st_size != start + int(np.prod(shape)) * want.itemsize:
            raise ValueError(f"{path} has the wrong size for {shape} {want}")
        x = np.empty(shape, dtype=want)
        handle.seek(start)
        if handle.readinto(_bytes_of(x)) != x.nbytes:
            raise ValueError(f"{path} ended early")
    return x


def _sum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sum")


def _bytes_of(x: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 view (x.nbytes,), sharing its memory.

    Empty arrays included: memoryview.cast refuses a view with a zero in its shape (0 clips,
    0 frames), a flat uint8 view of 0 bytes is fine.
    """
    return x.reshape(-1).view(np.uint8)


def _checksum(x: np.ndarray) -> dict:
    """{"shape", "dtype", "sha256"} of an array's data (C order); any shape, empty ones included."""
    data = np.ascontiguousarray(x)
    return {"shape": list(data.shape), "dtype": str(data.dtype), "sha256": hashlib.sha256(_bytes_of(data)).hexdigest()}


def _write_cache(path: Path, x: np.ndarray) -> None:
    """Write x to `path` and its checksum to `<name>.sum`, each atomically (temp file in the
    same folder, then os.replace). A folder that cannot be written raises CacheError naming it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    tmp_sum = path.with_name(f".{path.name}.sum.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, x, allow_pickle=False)
        tmp_sum.write_text(json.dumps(_checksum(x)))
        os.replace(tmp, path)
        os.replace(tmp_sum, _sum_path(path))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path.parent, "caching features", x.nbytes, exc) from exc
        raise paths.cache_error(path.parent, exc) from exc
    finally:
        for leftover in (tmp, tmp_sum):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


# --- extraction ----------------------------------------------------------------------------


def _extract(
    files: Sequence[Path], config: FeatureConfig, backend: str, device: str, report: Callable[[int], None],
    uuids: Sequence[str] | None = None, variant: AudioVariant = CLEAN,
    spans: Sequence[tuple[float, float | None]] | None = None,
) -> np.ndarray:
    """(len(files), config.num_frames, feature_dim) float32 features of the files' audio,
    changed by `variant` (which needs the clips' `uuids`); `spans`: (start, seconds) per file
    where only a window of it is a clip (default: whole files)."""
    out = np.empty((len(files), config.num_frames, config.feature_dim), dtype=np.float32)
    spans = spans or [(0.0, None)] * len(files)
    sources = [_Source(Path(f), uid, variant, *span) for f, uid, span in zip(files, uuids or [""] * len(files), spans)]
    spectral = config.representation != "waveform"
    if spectral and backend == "librosa":
        _extract_librosa(sources, config, out, report)
        return out
    if spectral and device == "cpu":
        _extract_cpu(sources, config, out, report)
        return out
    for start, audio in _decoded_chunks(sources, config):
        if config.representation == "waveform":
            block = np.stack([waveform_frames(y, config) for y in audio])
        else:
            block = _torch_features(audio, config, device)
        out[start : start + len(audio)] = block[:, : config.num_frames]
        report(start + len(audio))
    return out


@dataclass(frozen=True)
class _Source:
    """One clip to featurise: its file, uuid and the variant of its audio (picklable)."""

    path: Path
    uuid: str
    variant: AudioVariant = CLEAN
    start: float = 0.0  # seconds into the file (a window of a long file)
    seconds: float | None = None  # the window's length; None: the whole file

    def audio(self, config: FeatureConfig) -> np.ndarray:
        """(config.clip_samples,) float32 at config.sample_rate, changed by the variant."""
        y = decode_clip(self.path, config, self.start, self.seconds)
        return y if self.variant.kind == "clean" else self.variant.apply(y, config.sample_rate, self.uuid)


def _extract_cpu(files: Sequence[_Source], config: FeatureConfig, out: np.ndarray, report: Callable[[int], None]) -> None:
    """Fill `out` (n, num_frames, dim) with torch features on the CPU, CPU_WORKERS tasks at a time.

    Each task decodes CPU_TASK_CLIPS files and computes their features in one thread, so the
    audio is still in cache when its STFT runs and every core works on both stages; decoding
    (soundfile, soxr), torch and the contrast kernel all release the GIL.
    """

    def task(start: int) -> int:
        audio = np.stack([f.audio(config) for f in files[start : start + CPU_TASK_CLIPS]])
        out[start : start + len(audio)] = _torch_features(audio, config, "cpu")[:, : config.num_frames]
        return len(audio)

    done = 0
    with ThreadPoolExecutor(max_workers=CPU_WORKERS) as pool:
        for count in pool.map(task, range(0, len(files), CPU_TASK_CLIPS)):
            done += count
            report(done)


def _decoded_chunks(files: Sequence[_Source], config: FeatureConfig):
    """Yield (start index, (chunk, clip_samples) float32 audio), decoding the next chunk meanwhile."""
    starts = list(range(0, len(files), CHUNK_CLIPS))
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:

        def submit(start: int) -> list[Future]:
            return [pool.submit(f.audio, config) for f in files[start : start + CHUNK_CLIPS]]

        pending = submit(starts[0]) if starts else []
        for index, start in enumerate(starts):
            current = pending
            pending = submit(starts[index + 1]) if index + 1 < len(starts) else []
            yield start, np.stack([future.result() for future in current])


def _extract_librosa(
    files: Sequence[_Source], config: FeatureConfig, out: np.ndarray, report: Callable[[int], None]
) -> None:
    """Fill `out` with librosa features, in LIBROSA_WORKERS processes when there are many files."""
    if len(files) < PROCESS_POOL_MIN_CLIPS or LIBROSA_WORKERS < 2:
        for index, source in enumerate(files):
            out[index] = _librosa_file_features(source, config)
            report(index + 1)
        return
    with spawn_context() as context:
        pool = ProcessPoolExecutor(max_workers=LIBROSA_WORKERS, mp_context=context)
        results = pool.map(_librosa_file_features, files, [config] * len(files), chunksize=16)  # starts the workers
    with pool:
        for index, features in enumerate(results):
            out[index] = features
            report(index + 1)


def _librosa_file_features(source: _Source, config: FeatureConfig) -> np.ndarray:
    """(config.num_frames, feature_dim) librosa features of one clip (runs in worker processes)."""
    return librosa_features(source.audio(config), config)[: config.num_frames]


def _torch_features(audio: np.ndarray, config: FeatureConfig, device: str) -> np.ndarray:
    from .spectral import batch_spectral_features

    return batch_spectral_features(audio, config, device=device)


def _resolve_backend(backend: str) -> str:
    """"auto" -> "torch" when engine.features.spectral imports, else "librosa"; others checked and returned."""
    if backend not in BACKENDS:
        raise ConfigError(f"feature backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "auto":
        return backend
    try:
        from . import spectral  # noqa: F401
    except ImportError:
        return "librosa"
    return "torch"
