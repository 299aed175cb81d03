"""Batched spectral features in torch (CPU or GPU) that reproduce librosa 0.11.

`batch_spectral_features` computes, for many clips at once, what these librosa calls give
one clip at a time (all with their default parameters, sr 22,050 Hz):

    librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13)       13 rows
    librosa.feature.spectral_centroid(y=y, sr=sr)      1 row (Hz)
    librosa.feature.spectral_contrast(y=y, sr=sr)      7 rows (dB)
    librosa.feature.chroma_stft(y=y, sr=sr)            12 rows, if config.chroma
    librosa.feature.delta(rows, width=9)               of all rows above, if config.deltas

Precision: librosa's STFT runs in float64 (its window is float64) and rounds the result to
complex64; the rest runs in float32. We follow it: the STFT in float64 (on any device), then
float32. A float32 STFT would be ~1.5x faster but is not good enough: in audio resampled
from 44.1 kHz (every dataset clip) the top contrast band's valley lies in the resampler's
stopband, ~160 dB below the frame's peak, under float32's rounding noise, and its contrast
then misses librosa's by up to 6e-2 relative (limit 1e-2; test_resampled_audio_matches_librosa).
Per-clip steps (power_to_db's top_db, the tuning estimate of chroma_stft) are computed per
clip inside the batch, so no clip affects another.

Spectral contrast needs, per frame and band, the mean of the k largest and k smallest
magnitudes (k <= 9 of up to 431 bins). On a CPU a small compiled kernel (numba, which
librosa already depends on) finds them in one pass per band; elsewhere torch.topk does.

Chroma: chroma_stft estimates each clip's tuning (librosa.estimate_tuning: piptrack peaks,
median magnitude threshold, 100-bin histogram of pitch residuals). That is replicated here
with batched tensor ops; the chroma filter bank for each of the 100 possible tuning values
is built with librosa.filters.chroma when first needed and cached.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import librosa
import numba
import numpy as np
import scipy.fft
import scipy.signal
import torch

from .config import FeatureConfig
from .errors import AudioError, ConfigError

# Clips per batch. On a CPU small batches keep the float64 STFT in cache (~2 MB per clip);
# on a GPU 64 clips of 65,536 samples need ~0.5 GB.
CPU_CHUNK_CLIPS = 4
GPU_CHUNK_CLIPS = 64
N_MELS = 128
CONTRAST_FMIN = 200.0  # Hz
CONTRAST_BANDS = 6
CONTRAST_QUANTILE = 0.02
PIP_FMIN, PIP_FMAX, PIP_THRESHOLD = 150.0, 4000.0, 0.1  # piptrack defaults (Hz, Hz, ratio)
TUNING_EDGES = np.linspace(-0.5, 0.5, 101)  # pitch_tuning's histogram, resolution 0.01
TUNING_VALUES = [float(v) for v in TUNING_EDGES[:100]] + [0.0]  # bin index -> tuning; 100: no pitch
DELTA_WIDTH = 9
AMIN, TOP_DB = 1e-10, 80.0  # power_to_db defaults (ref 1.0)


@dataclass
class _Tables:
    """Constant matrices for one (sample rate, n_fft, n_mfcc, device), built once."""

    device: torch.device
    window: torch.Tensor  # (n_fft,) float64, periodic Hann (scipy's 'hann', fftbins=True)
    mel: torch.Tensor  # (128, bins) float32, slaney
    dct: torch.Tensor  # (n_mfcc, 128) float32, DCT-II ortho rows
    freqs: torch.Tensor  # (bins,) float32, Hz
    bands: list[tuple[slice, int]]  # per contrast band: its bins, quantile count
    band_table: np.ndarray  # (bands, 3) int64: first bin, end bin, quantile count (CPU kernel)
    pip_bins: slice  # bins with PIP_FMIN <= f < PIP_FMAX
    tuning_edges: torch.Tensor  # (101,) float64, TUNING_EDGES
    delta: torch.Tensor  # (1, 1, DELTA_WIDTH) float64 Savitzky-Golay derivative weights
    chroma: dict[int, torch.Tensor] = field(default_factory=dict)  # tuning index -> (bins, 12)


def _tables(config: FeatureConfig, device: str) -> _Tables:
    """The cached tables for `config` on `device`; feature switches share one entry."""
    return _build_tables(config.sample_rate, config.n_fft, config.n_mfcc, device)


@functools.lru_cache(maxsize=8)
def _build_tables(sr: int, n_fft: int, n_mfcc: int, device: str) -> _Tables:
    dev = torch.device(device)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=N_MELS)
    dct = scipy.fft.dct(np.eye(N_MELS), type=2, norm="ortho", axis=0)[:n_mfcc]
    pip = np.flatnonzero((freqs >= PIP_FMIN) & (freqs < min(PIP_FMAX, sr / 2)))
    delta = scipy.signal.savgol_coeffs(DELTA_WIDTH, 1, deriv=1, use="dot")
    bands = [(slice(int(i[0]), int(i[-1]) + 1), k) for i, k in _contrast_bands(freqs, sr)]
    return _Tables(
        device=dev,
        window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=dev),
        mel=torch.tensor(mel, dtype=torch.float32, device=dev),
        dct=torch.tensor(dct, dtype=torch.float32, device=dev),
        freqs=torch.tensor(freqs, dtype=torch.float32, device=dev),
        bands=bands,
        band_table=np.array([(b.start, b.stop, k) for b, k in bands], dtype=np.int64),
        pip_bins=slice(int(pip[0]), int(pip[-1]) + 1),
        tuning_edges=torch.tensor(TUNING_EDGES, dtype=torch.float64, device=dev),
        delta=torch.tensor(delta, dtype=torch.float64, device=dev).view(1, 1, -1),
    )


def _contrast_bands(freqs: np.ndarray, sr: int) -> list[tuple[np.ndarray, int]]:
    """Bins of each spectral-contrast band and its quantile count, as librosa chooses them.

    librosa widens each band by one bin below (except the first) and extends the last band
    to Nyquist, drops the top bin of every band but the last, and counts the quantile on
    the band before that drop. Returns [(bin indices, count)] for n_bands + 1 bands.
    """
    octa = np.zeros(CONTRAST_BANDS + 2)
    octa[1:] = CONTRAST_FMIN * (2.0 ** np.arange(0, CONTRAST_BANDS + 1))
    if np.any(octa[:-1] >= 0.5 * sr):
        raise ConfigError("spectral contrast bands exceed Nyquist at this sample rate")
    bands = []
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        current = np.logical_and(freqs >= f_low, freqs <= f_high)
        idx = np.flatnonzero(current)
        if k > 0:
            current[idx[0] - 1] = True
        if k == CONTRAST_BANDS:
            current[idx[-1] + 1 :] = True
        count = max(int(np.rint(CONTRAST_QUANTILE * np.sum(current))), 1)
        bins = np.flatnonzero(current)
        bands.append((bins if k == CONTRAST_BANDS else bins[:-1], count))
    return bands


def batch_spectral_features(
    y: np.ndarray | torch.Tensor, config: FeatureConfig, device: str = "cpu"
) -> np.ndarray:
    """Spectral features of many clips, equal to librosa's per-clip features.

    y: (n, config.clip_samples) float mono at config.sample_rate (cast to float32).
    Returns (n, config.total_frames, config.feature_dim) float32; per frame:
    n_mfcc MFCC, spectral centroid (Hz), 7 spectral-contrast bands (dB), 12 chroma if
    config.chroma, then the deltas of all of those if config.deltas.
    Runs on `device` ("cpu", "cuda", ...) in chunks of CPU_CHUNK_CLIPS or GPU_CHUNK_CLIPS clips.
    """
    if config.representation != "spectral":
        raise ConfigError("batch_spectral_features needs representation='spectral'")
    clips = torch.as_tensor(y)
    if clips.ndim != 2:
        raise AudioError(f"expected clips as a (n, samples) array, got shape {tuple(clips.shape)}")
    if clips.shape[1] != config.clip_samples:
        raise AudioError(f"clips have {clips.shape[1]} samples; fit them to {config.clip_samples} first")
    frames = config.total_frames
    if config.deltas and frames < DELTA_WIDTH:
        raise ConfigError(f"deltas need at least {DELTA_WIDTH} frames, clips give {frames}")
    if not bool(torch.isfinite(clips).all()):
        raise AudioError("clips contain NaN or infinite samples")
    tables = _tables(config, device)
    out = np.empty((clips.shape[0], frames, config.feature_dim), dtype=np.float32)
    step = CPU_CHUNK_CLIPS if tables.device.type == "cpu" else GPU_CHUNK_CLIPS
    for start in range(0, clips.shape[0], step):
        chunk = clips[start : start + step].to(tables.device, torch.float32)
        out[start : start + len(chunk)] = _chunk_features(chunk, config, tables).cpu().numpy()
    return out


def _chunk_features(y: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """y (n, samples) float32 on the tables' device -> (n, frames, feature_dim) float32."""
    power = _stft_power(y, config, t)
    mag = torch.sqrt(power)
    cols = [_mfcc(power, t), _centroid(mag, t), _contrast(mag, t)]
    if config.chroma:
        cols.append(_chroma(power, _tuning_bins(power, config, t), config, t))
    feats = torch.cat(cols, dim=2)
    if config.deltas:
        feats = torch.cat([feats, _delta(feats, t)], dim=2)
    return feats


def _stft_power(y: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """|STFT|^2 as (n, frames, 1 + n_fft // 2) float32: periodic Hann, centred, zero padding.

    Computed in float64 and rounded to complex64, as librosa does (see the module notes).
    Frames-first layout keeps every later reduction over frequency on the contiguous axis.
    re^2 + im^2 avoids abs()'s slower hypot; magnitudes are its square root.
    """
    half = config.n_fft // 2
    padded = torch.nn.functional.pad(y.to(torch.float64), (half, half))
    windows = padded.unfold(-1, config.n_fft, config.hop_length)
    frames = torch.mul(windows, t.window, out=_workspace("frames", windows.shape, torch.float64, y.device))
    shape = (*windows.shape[:-1], half + 1)
    spec = torch.fft.rfft(frames, dim=-1, out=_workspace("spec", shape, torch.complex128, y.device))
    parts = torch.view_as_real(spec.to(torch.complex64))
    return parts[..., 0].square() + parts[..., 1].square()


_WORKSPACE = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor kept per thread for CPU work, else a new one.

    The float64 frames and spectrum are ~2 MB per clip each; allocating them fresh every
    chunk costs ~1 ms of page faults per clip (glibc maps and unmaps such blocks), more than
    the FFT itself. Reused, they stay mapped (and in cache). Contents are undefined.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    cached = getattr(_WORKSPACE, name, None)
    if cached is None or cached.shape != torch.Size(shape) or cached.dtype != dtype:
        cached = torch.empty(shape, dtype=dtype)
        setattr(_WORKSPACE, name, cached)
    return cached


def _stft_magnitude(y: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """|STFT| as (n, frames, 1 + n_fft // 2) float32 (see _stft_power)."""
    return torch.sqrt(_stft_power(y, config, t))


def _power_to_db(x: torch.Tensor) -> torch.Tensor:
    """librosa.power_to_db(ref=1, amin=1e-10, top_db=80) per clip: x (n, ...) -> dB, same shape."""
    db = 10.0 * torch.log10(torch.clamp(x, min=AMIN))
    floor = db.flatten(1).amax(dim=1) - TOP_DB
    return torch.maximum(db, floor.view(-1, *([1] * (x.ndim - 1))))


def _mfcc(power: torch.Tensor, t: _Tables) -> torch.Tensor:
    """power (n, frames, bins) -> MFCC (n, frames, n_mfcc): slaney mel, dB, DCT-II ortho."""
    return _power_to_db(power @ t.mel.T) @ t.dct.T


def _centroid(mag: torch.Tensor, t: _Tables) -> torch.Tensor:
    """mag (n, frames, bins) -> spectral centroid (n, frames, 1) in Hz; 0 for silent frames.

    sum(f * mag) / sum(mag): one matrix-vector product, no normalised copy of mag.
    """
    total = mag.sum(dim=2, keepdim=True)
    total = torch.where(total < torch.finfo(mag.dtype).tiny, torch.ones_like(total), total)
    return (mag @ t.freqs.view(-1, 1)) / total


def _contrast(mag: torch.Tensor, t: _Tables) -> torch.Tensor:
    """mag (n, frames, bins) -> spectral contrast (n, frames, 7) in dB: peak minus valley.

    Peak and valley are the means of the top and bottom quantile of magnitudes in each band.
    """
    if mag.device.type == "cpu":
        peaks, valleys = _band_extremes_cpu(mag, t)
    else:
        peaks, valleys = _band_extremes_torch(mag, t)
    return _power_to_db(peaks) - _power_to_db(valleys)


def _band_extremes_torch(mag: torch.Tensor, t: _Tables) -> tuple[torch.Tensor, torch.Tensor]:
    """Per band, mean of its `count` largest and smallest magnitudes: two (n, frames, bands)."""
    peaks, valleys = [], []
    for bins, count in t.bands:
        band = mag[:, :, bins]
        valleys.append(_extreme_mean(band, count, largest=False))
        peaks.append(_extreme_mean(band, count, largest=True))
    return torch.stack(peaks, 2), torch.stack(valleys, 2)


def _extreme_mean(band: torch.Tensor, count: int, largest: bool) -> torch.Tensor:
    """Mean of the `count` largest (or smallest) values over the last axis: (n, frames, k) -> (n, frames)."""
    if count == 1:
        return band.amax(dim=2) if largest else band.amin(dim=2)
    return band.topk(count, dim=2, largest=largest).values.mean(dim=2)


def _band_extremes_cpu(mag: torch.Tensor, t: _Tables) -> tuple[torch.Tensor, torch.Tensor]:
    """_band_extremes_torch for a CPU tensor, by the compiled kernel (same values, ~10x faster)."""
    rows = mag.reshape(-1, mag.shape[-1]).contiguous().numpy()
    peaks, valleys = _band_extremes_kernel(rows, t.band_table)
    shape = (*mag.shape[:-1], len(t.bands))
    return torch.from_numpy(peaks).view(shape), torch.from_numpy(valleys).view(shape)


@numba.njit(nogil=True, cache=True)
def _band_extremes_kernel(rows: np.ndarray, bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rows (r, bins) float32, bands (b, 3) [start, end, count] -> peaks, valleys (r, b) float32.

    Per row and band, the mean of the `count` largest / smallest values, kept in two small
    sorted buffers (insertion): one pass over the band's bins, no sort of the whole band.
    """
    n_rows, n_bands = rows.shape[0], bands.shape[0]
    peaks = np.empty((n_rows, n_bands), np.float32)
    valleys = np.empty((n_rows, n_bands), np.float32)
    top = np.empty(bands[:, 2].max(), np.float32)  # ascending: top[0] is the smallest kept
    low = np.empty(bands[:, 2].max(), np.float32)  # descending: low[0] is the largest kept
    for r in range(n_rows):
        for b in range(n_bands):
            start, end, k = bands[b, 0], bands[b, 1], bands[b, 2]
            for i in range(k):
                top[i] = -np.inf
                low[i] = np.inf
            for j in range(start, end):
                v = rows[r, j]
                if v > top[0]:
                    i = 1
                    while i < k and top[i] < v:
                        top[i - 1] = top[i]
                        i += 1
                    top[i - 1] = v
                if v < low[0]:
                    i = 1
                    while i < k and low[i] > v:
                        low[i - 1] = low[i]
                        i += 1
                    low[i - 1] = v
            peaks[r, b] = top[:k].sum() / k
            valleys[r, b] = low[:k].sum() / k
    return peaks, valleys


def _tuning_bins(power: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """Per-clip tuning as librosa.estimate_tuning(S=power): index into TUNING_VALUES, (n,) int64.

    Pitches are piptrack's parabolic-interpolated peaks (150-4000 Hz, above 0.1 x the frame
    maximum); those with magnitude at least the clip's median vote in a 100-bin histogram
    of their distance to equal temperament; the fullest bin wins (first one on ties).
    No pitch at all gives index 100, tuning 0.0.
    """
    pitch, mag = _piptrack(power, config, t)
    found = pitch > 0
    chosen = found & (mag >= _masked_median(mag, found).view(-1, 1, 1))
    octs = torch.log2(pitch / np.float32(440.0 / 16))
    residual = torch.remainder(np.float32(12.0) * octs, 1.0)
    residual = torch.where(residual >= 0.5, residual - 1.0, residual).to(torch.float64)
    bins = (torch.searchsorted(t.tuning_edges, residual.flatten(1).contiguous(), right=True) - 1).clamp(0, 99)
    bins = torch.where(chosen.flatten(1), bins, torch.full_like(bins, 100))
    counts = torch.zeros(len(power), 101, dtype=torch.int64, device=power.device)
    counts.scatter_add_(1, bins, torch.ones_like(bins))
    best = counts[:, :100].argmax(dim=1)
    return torch.where(counts[:, :100].sum(dim=1) == 0, torch.full_like(best, 100), best)


def _piptrack(power: torch.Tensor, config: FeatureConfig, t: _Tables) -> tuple[torch.Tensor, torch.Tensor]:
    """librosa.piptrack(S=power) on its 150-4000 Hz bins (needs one more bin on each side).

    Returns pitch (Hz) and magnitude, each (n, frames, pip bins), zero where no peak.
    """
    lo, hi = t.pip_bins.start, t.pip_bins.stop
    s = power[:, :, lo - 1 : hi + 1]
    gated = s * (s > PIP_THRESHOLD * power.amax(dim=2, keepdim=True))
    left, mid, right = s[:, :, :-2], s[:, :, 1:-1], s[:, :, 2:]
    a = right + left - 2 * mid
    b = (right - left) / 2
    flat = b.abs() >= a.abs()
    shift = torch.where(flat, torch.zeros_like(a), -b / torch.where(flat, torch.ones_like(a), a))
    peak = (gated[:, :, 1:-1] > gated[:, :, :-2]) & (gated[:, :, 1:-1] >= gated[:, :, 2:])
    bin_index = torch.arange(lo, hi, device=s.device, dtype=torch.float64)
    hz = ((bin_index + shift) * (config.sample_rate / config.n_fft)).to(s.dtype)
    mags = mid + 0.5 * b * shift  # np.gradient's central difference is b
    zero = torch.zeros_like(hz)
    return torch.where(peak, hz, zero), torch.where(peak, mags, zero)


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """np.median of x[i][mask[i]] for each clip i (mean of the middle two); 0 where none. (n,)"""
    flat = torch.where(mask, x, torch.full_like(x, float("inf"))).flatten(1).sort(dim=1).values
    count = mask.flatten(1).sum(dim=1, keepdim=True)
    lo = flat.gather(1, ((count - 1) // 2).clamp(min=0))
    hi = flat.gather(1, (count // 2).clamp(max=flat.shape[1] - 1))
    median = ((lo + hi) / 2).squeeze(1)
    return torch.where(count.squeeze(1) > 0, median, torch.zeros_like(median))


def _chroma(power: torch.Tensor, tuning: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """power (n, frames, bins), tuning indices (n,) -> chroma (n, frames, 12), max-normalised per frame."""
    for k in set(tuning.tolist()) - set(t.chroma):
        fb = librosa.filters.chroma(sr=config.sample_rate, n_fft=config.n_fft, tuning=TUNING_VALUES[k])
        t.chroma[k] = torch.tensor(fb.T, dtype=torch.float32, device=t.device)
    raw = torch.bmm(power, torch.stack([t.chroma[k] for k in tuning.tolist()]))
    length = raw.abs().amax(dim=2, keepdim=True)
    length = torch.where(length < torch.finfo(raw.dtype).tiny, torch.ones_like(length), length)
    return raw / length


def _delta(feats: torch.Tensor, t: _Tables) -> torch.Tensor:
    """librosa.feature.delta(width=9, order=1, mode="interp") over frames: (n, frames, cols).

    Interior frames: Savitzky-Golay derivative weights. In "interp" mode the edge frames
    take the slope of a line fitted to the first / last 9 frames, i.e. the value at frame 4
    from each end. Computed in float64 like scipy, so that the delta of a constant column
    (a chroma bin that is always the maximum) stays ~0 rather than float32 noise.
    """
    n, frames, cols = feats.shape
    half = DELTA_WIDTH // 2
    series = feats.transpose(1, 2).reshape(n * cols, 1, frames).to(torch.float64)
    inner = torch.nn.functional.conv1d(series, t.delta).view(n, cols, -1)
    out = torch.cat([inner[:, :, :1].expand(-1, -1, half), inner, inner[:, :, -1:].expand(-1, -1, half)], dim=2)
    return out.transpose(1, 2).to(feats.dtype)
