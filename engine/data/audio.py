"""Audio decoding: one function turns a dataset file or an upload into mono samples.

Every path into the models goes through `load_audio`, so a clip read for training and the
same clip uploaded on the predict page give the same samples.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
import soundfile as sf

from ..core.errors import AudioError

AudioSource = Union[str, os.PathLike, bytes, BinaryIO]
MODEL_SAMPLE_RATE = 22050
CLIP_SAMPLES = 65536  # 3-second Medley clip (131,072 at 44.1 kHz) at 22,050 Hz
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_MINUTES = 20.0  # default longest recording decoded; $MEDLEY_MAX_AUDIO_MINUTES changes it
DECODE_BLOCK = 1 << 20  # frames decoded at a time (mono is kept, channels are not)
SUPPORTED_FORMATS = ("wav", "flac", "ogg", "mp3")


def max_audio_seconds() -> float:
    """The longest recording load_audio decodes by default: $MEDLEY_MAX_AUDIO_MINUTES (default
    MAX_MINUTES = 20) minutes, in seconds. A 20-minute recording is ~106 MB at 22,050 Hz."""
    text = os.environ.get("MEDLEY_MAX_AUDIO_MINUTES", "")
    try:
        minutes = float(text) if text else MAX_MINUTES
    except ValueError:
        raise AudioError(f"MEDLEY_MAX_AUDIO_MINUTES must be a number of minutes, not {text!r}") from None
    if not minutes > 0:
        raise AudioError(f"MEDLEY_MAX_AUDIO_MINUTES must be positive, not {text!r}")
    return minutes * 60.0


def load_audio(
    source: AudioSource, *, sr: int = MODEL_SAMPLE_RATE, max_bytes: int | None = None, name: str | None = None,
    resampler: str = "soxr_hq",
    max_seconds: float | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Decode `source` (path, bytes or binary file) to mono float32 samples at `sr` Hz.

    Any channel count is averaged to mono; any sample rate is resampled with `resampler`:
    "soxr_hq" (what `librosa.load` uses by default since 0.10) or "kaiser_best" (resampy, what
    librosa 0.6/0.7 used; see `FeatureConfig.inputs`). Returns shape (samples,).
    `name` (e.g. an upload's original file name) is only used in error messages.
    `max_seconds` (default `max_audio_seconds()`, 20 minutes): a longer recording is refused
    from its header, before decoding, and decoding stops at the limit where a header does not
    know the length (some MP3s), so memory stays bounded whatever the file claims.
    `offset` / `duration` (seconds): decode only that part of the file (a window of a long
    dataset file, engine.data.folders): the file is read from `offset` for at most `duration`
    seconds, and the length limit applies to what is read.
    Raises AudioError with a user-facing message for empty, oversized, too long, non-audio or
    corrupt input.
    """
    limit = max_audio_seconds() if max_seconds is None else max_seconds
    name = f"'{name}'" if name else _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError(f"{name} is empty (0 bytes)")
        if max_bytes is not None and len(source) > max_bytes:
            raise AudioError(f"{name} is {_size(len(source))}; the limit is {_size(max_bytes)}")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name} does not exist")
        if path.stat().st_size == 0:
            raise AudioError(f"{name} is empty (0 bytes)")
    try:
        mono, native_sr = _decode_mono(source, name, limit, offset, duration)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile raises several types for bad input
        reason = re.sub(r"Error opening [^:]*: ", "", str(exc)).strip()
        raise AudioError(f"{name} is not a readable audio file (WAV, FLAC, OGG or MP3): {reason}") from exc
    if mono.shape[0] == 0:
        raise AudioError(f"{name} contains no samples")
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"{name} contains NaN or infinite samples")
    return resample(mono, native_sr, sr, method=resampler)


def _decode_mono(source: Any, name: str, limit: float, offset: float = 0.0,
                 duration: float | None = None) -> tuple[np.ndarray, int]:
    """(mono float32 samples, native rate) of `source` from `offset` seconds for at most
    `duration` seconds (default: to the end), decoded DECODE_BLOCK frames at a time;
    AudioError as soon as the header or the decoded length exceeds `limit` seconds."""
    with sf.SoundFile(source) as handle:
        rate = int(handle.samplerate)
        most = int(limit * rate) if math.isfinite(limit) else 2**62
        wanted = 2**62 if duration is None else int(math.ceil(duration * rate))
        if offset > 0:
            handle.seek(min(int(round(offset * rate)), max(handle.frames, 0)))
        if duration is None and 0 < handle.frames < 2**62 and handle.frames > most:
            raise AudioError(_too_long(name, handle.frames / rate, limit))
        blocks, total = [], 0
        while total < wanted:
            block = handle.read(min(DECODE_BLOCK, wanted - total), dtype="float32", always_2d=True)
            if not len(block):
                break
            total += len(block)
            if total > most:
                raise AudioError(_too_long(name, None, limit))
            blocks.append(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0].copy())
    return (np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)), rate


def _size(n: int) -> str:
    """Bytes as the upload widget counts them (MB = 2**20 bytes): 52,428,800 -> '50 MB'."""
    return f"{n / 2**20:.1f} MB".replace(".0 MB", " MB") if n >= 2**20 else f"{n / 2**10:.0f} kB"


def _too_long(name: str, seconds: float | None, limit: float) -> str:
    length = f"lasts {seconds / 60:.1f} minutes" if seconds is not None else "is longer than that"
    return (f"{name} {length}; the limit is {limit / 60:g} minutes (set MEDLEY_MAX_AUDIO_MINUTES to change it, "
            f"or cut the recording)")


RESAMPLERS: tuple[str, ...] = ("soxr_hq", "kaiser_best")


def resample(y: np.ndarray, orig_sr: int, target_sr: int, *, method: str = "soxr_hq") -> np.ndarray:
    """Resample mono float32 `y` (samples,) from orig_sr to target_sr Hz.

    method "soxr_hq": soxr high quality (librosa >= 0.10's default). "kaiser_best": resampy's
    windowed-sinc filter, as librosa 0.6/0.7's `load` did, with its output length
    ceil(samples * target_sr / orig_sr) (librosa's fix_length). It is far slower than soxr
    (benchmarks/resample.py); the feature cache makes it a one-off per dataset.
    """
    if method not in RESAMPLERS:
        raise AudioError(f"resampler must be one of {list(RESAMPLERS)}, not {method!r}")
    if orig_sr == target_sr:
        return np.ascontiguousarray(y, dtype=np.float32)
    if method == "kaiser_best":
        length = int(np.ceil(len(y) * target_sr / orig_sr))
        return fit_to_length(_kaiser_best(np.ascontiguousarray(y, dtype=np.float32), orig_sr, target_sr), length)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32)


def _kaiser_best(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """resampy's "kaiser_best" resampling of float32 y (samples,) -> (int(samples * ratio),) float32.

    For an integer decimation factor L whose filter table resampy reads at whole steps (44.1 ->
    22.05 kHz: L = 2), resampy's loop reduces to a symmetric FIR on every L-th sample,
    y[t] = sum_j h[|j|] x[L t + j] (zeros outside the clip) with h[m] = ratio * window[m * step].
    `_decimate` runs that loop in resampy's own order and float32 accumulation, so the result
    is bit-identical, but reads a compact copy of the taps instead of striding through
    resampy's 3 MB table, with the loops interchanged for SIMD (benchmarks/resample.py measures
    the gain). Other ratios call resampy itself.
    """
    import resampy
    from resampy.filters import get_filter

    window, num_table, _ = get_filter("kaiser_best")
    factor, rest = divmod(orig_sr, target_sr)
    if rest or factor < 2 or num_table % factor:
        return resampy.resample(y, orig_sr, target_sr, filter="kaiser_best").astype(np.float32, copy=False)
    step = num_table // factor
    scaled = window * (target_sr / orig_sr)  # resampy scales the window by the ratio when decimating
    left = np.ascontiguousarray(scaled[step * np.arange(window.shape[0] // step)])  # x[n - i]
    right = np.ascontiguousarray(scaled[step + step * np.arange((window.shape[0] - step) // step)])  # x[n + 1 + k]
    out = np.zeros(int(len(y) * target_sr / orig_sr), dtype=np.float32)
    pad = max(left.shape[0], right.shape[0] + 1)
    padded = np.zeros(len(y) + 2 * pad, dtype=np.float32)  # adding w * 0.0 leaves a sum unchanged,
    padded[pad:-pad] = y  # so zeros stand in for resampy's shortened wings at the clip's ends
    _decimate_kernel()(padded, pad, factor, left, right, out)
    return out


_DECIMATE = None


def _decimate_kernel():
    """The compiled loop of `_kaiser_best` (numba, compiled on first use and cached on disk).

    Per output sample the same sum as resampy, in the same order (left wing i = 0, 1, ...,
    then right wing k = 0, 1, ...), rounded to float32 after every term; the loops are only
    interchanged so that the inner one runs over output samples in SIMD lanes.
    """
    global _DECIMATE
    if _DECIMATE is None:
        import numba

        @numba.njit(nogil=True, cache=True)
        def decimate(x, pad, factor, left, right, y):  # pragma: no cover - compiled
            for i in range(left.shape[0]):
                w = left[i]
                for t in range(y.shape[0]):
                    y[t] = np.float32(y[t] + w * x[pad + t * factor - i])
            for k in range(right.shape[0]):
                w = right[k]
                for t in range(y.shape[0]):
                    y[t] = np.float32(y[t] + w * x[pad + t * factor + k + 1])

        _DECIMATE = decimate
    return _DECIMATE


def fit_to_length(y: np.ndarray, length: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pad at the end or cut the end so that `y` has exactly `length` samples."""
    if len(y) >= length:
        return y[:length]
    return np.pad(y, (0, length - len(y)))


def split_windows(y: np.ndarray, length: int = CLIP_SAMPLES, hop: int | None = None) -> np.ndarray:
    """Cut a clip into windows of `length` samples every `hop` samples (default: no overlap).

    A clip no longer than `length` gives one zero-padded window. A trailing remainder shorter
    than half a window is dropped, a longer one is zero-padded. Returns (windows, length).
    """
    return np.stack([fit_to_length(y[s : s + length], length) for s in window_starts(len(y), length, hop)])


def window_starts(samples: int, length: int = CLIP_SAMPLES, hop: int | None = None) -> list[int]:
    """Start samples of the windows split_windows cuts from a clip of `samples` samples."""
    hop = hop or length
    if samples <= length:
        return [0]
    starts = list(range(0, samples - length + 1, hop))
    tail = samples - (starts[-1] + hop)
    if tail >= length // 2:
        starts.append(starts[-1] + hop)
    return starts


def is_silent(y: np.ndarray, threshold: float = 1e-4) -> bool:
    """True when the clip's peak absolute amplitude is below `threshold` (about -80 dBFS)."""
    return len(y) == 0 or float(np.max(np.abs(y))) < threshold


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    name = getattr(source, "name", None)
    return f"'{Path(name).name}'" if isinstance(name, str) else "the audio data"
