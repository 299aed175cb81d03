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

from .errors import AudioError

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
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode `source` (path, bytes or binary file) to mono float32 samples at `sr` Hz.

    Any channel count is averaged to mono; any sample rate is resampled with soxr (the same
    resampler `librosa.load` uses by default). Returns shape (samples,).
    `name` (e.g. an upload's original file name) is only used in error messages.
    `max_seconds` (default `max_audio_seconds()`, 20 minutes): a longer recording is refused
    from its header, before decoding, and decoding stops at the limit where a header does not
    know the length (some MP3s), so memory stays bounded whatever the file claims.
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
        mono, native_sr = _decode_mono(source, name, limit)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile raises several types for bad input
        reason = re.sub(r"Error opening [^:]*: ", "", str(exc)).strip()
        raise AudioError(f"{name} is not a readable audio file (WAV, FLAC, OGG or MP3): {reason}") from exc
    if mono.shape[0] == 0:
        raise AudioError(f"{name} contains no samples")
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"{name} contains NaN or infinite samples")
    return resample(mono, native_sr, sr)


def _decode_mono(source: Any, name: str, limit: float) -> tuple[np.ndarray, int]:
    """(mono float32 samples, native rate) of `source`, decoded DECODE_BLOCK frames at a time;
    AudioError as soon as the header or the decoded length exceeds `limit` seconds."""
    with sf.SoundFile(source) as handle:
        rate = int(handle.samplerate)
        most = int(limit * rate) if math.isfinite(limit) else 2**62
        if 0 < handle.frames < 2**62 and handle.frames > most:
            raise AudioError(_too_long(name, handle.frames / rate, limit))
        blocks, total = [], 0
        while True:
            block = handle.read(DECODE_BLOCK, dtype="float32", always_2d=True)
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


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono float32 `y` from orig_sr to target_sr Hz (soxr high quality)."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(y, dtype=np.float32)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32)


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
