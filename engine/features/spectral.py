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

Two paths give the same values. On a GPU: torch ops per chunk (time-domain Hann window,
rfft, |X|^2, dense mel product, torch.topk for spectral contrast). On a CPU, clip by clip:
one rfft of the unwindowed frames, then compiled kernels (numba, which librosa already
depends on) that apply the Hann window in frequency (3 taps), round to complex64 and take
power and magnitude once, and from those compute the mel bands (sparse: each bin feeds at
most 2 filters), the centroid and the contrast extremes. They work on a (bins, frames)
power array so that every inner loop runs over the clip's frames in SIMD lanes. The kernels
compile on a process's first CPU call (~2.3 s); numba caches them next to this file
(engine/__pycache__), or in its user-wide cache folder if that is not writable, and later
processes load them in ~0.3 s.
Spectral contrast needs, per frame and band, the mean of the k largest and k smallest
magnitudes (k <= 9 of up to 431 bins): an insertion network over k sorted slots per lane.

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

from ..core.config import FeatureConfig
from ..core.errors import AudioError, ConfigError
from .pcen import pcen_mel

# Clips per batch. On a CPU the STFT and kernels run clip by clip anyway (a clip's float64
# spectrum, ~2 MB, stays in cache); the chunk batches the few torch ops after them (dB, DCT).
# On a GPU 64 clips of 65,536 samples need ~0.5 GB.
CPU_CHUNK_CLIPS = 4
GPU_CHUNK_CLIPS = 64
POWER_TILE = 4  # frames per block that _hann_power writes transposed (4 float32 rows stay in L1)
N_MELS = 128
CONTRAST_FMIN = 200.0  # Hz
CONTRAST_BANDS = 6
CONTRAST_QUANTILE = 0.02
PIP_FMIN, PIP_FMAX, PIP_THRESHOLD = 150.0, 4000.0, 0.1  # piptrack defaults (Hz, Hz, ratio)
TUNING_EDGES = np.linspace(-0.5, 0.5, 101)  # pitch_tuning's histogram, resolution 0.01
TUNING_VALUES = [float(v) for v in TUNING_EDGES[:100]] + [0.0]  # bin index -> tuning; 100: no pitch
DELTA_WIDTH = 9
AMIN, TOP_DB = 1e-10, 80.0  # power_to_db defaults (ref 1.0)
TINY32 = float(np.finfo(np.float32).tiny)  # librosa.util.normalize's threshold for float32 input


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
    mel_support: np.ndarray  # (128, 2) int64: first and end bin of each filter's nonzero weights (CPU)
    mel_weights: np.ndarray  # (sum of support lengths,) float32: those weights, filter after filter (CPU)
    freqs_cpu: np.ndarray  # (bins,) float64, Hz (CPU kernel)
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
    support, weights = _sparse_mel(mel)
    return _Tables(
        device=dev,
        window=torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=dev),
        mel=torch.tensor(mel, dtype=torch.float32, device=dev),
        dct=torch.tensor(dct, dtype=torch.float32, device=dev),
        freqs=torch.tensor(freqs, dtype=torch.float32, device=dev),
        bands=bands,
        band_table=np.array([(b.start, b.stop, k) for b, k in bands], dtype=np.int64),
        mel_support=support,
        mel_weights=weights,
        freqs_cpu=np.asarray(freqs, dtype=np.float64),
        pip_bins=slice(int(pip[0]), int(pip[-1]) + 1),
        tuning_edges=torch.tensor(TUNING_EDGES, dtype=torch.float64, device=dev),
        delta=torch.tensor(delta, dtype=torch.float64, device=dev).view(1, 1, -1),
    )


def _sparse_mel(mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (filters, bins) float32 mel bank as (filters, 2) int64 [first, end) bins and flat weights.

    A slaney filter is a triangle: its nonzero weights are one contiguous run of bins (a few
    to ~50), so the mel product costs ~2 multiply-adds per bin instead of 128.
    """
    support = np.zeros((mel.shape[0], 2), dtype=np.int64)
    runs = []
    for f, row in enumerate(mel):
        nonzero = np.flatnonzero(row)
        if len(nonzero):
            support[f] = nonzero[0], nonzero[-1] + 1
            runs.append(row[nonzero[0] : nonzero[-1] + 1])
    weights = np.concatenate(runs) if runs else np.zeros(0)
    return support, np.ascontiguousarray(weights, dtype=np.float32)


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
    if config.representation not in ("spectral", "logmel", "pcen"):
        raise ConfigError("batch_spectral_features needs representation='spectral', 'logmel' or 'pcen'")
    clips = torch.as_tensor(y)
    if clips.ndim != 2:
        raise AudioError(f"expected clips as a (n, samples) array, got shape {tuple(clips.shape)}")
    if clips.shape[1] != config.clip_samples:
        raise AudioError(f"clips have {clips.shape[1]} samples; fit them to {config.clip_samples} first")
    frames = config.total_frames
    if config.deltas and frames < DELTA_WIDTH:
        raise ConfigError(f"deltas need at least {DELTA_WIDTH} frames, clips give {frames}")
    if not _all_finite(clips):
        raise AudioError("clips contain NaN or infinite samples")
    tables = _tables(config, device)
    out = np.empty((clips.shape[0], frames, config.feature_dim), dtype=np.float32)
    step = CPU_CHUNK_CLIPS if tables.device.type == "cpu" else GPU_CHUNK_CLIPS
    for start in range(0, clips.shape[0], step):
        chunk = clips[start : start + step].to(tables.device, torch.float32)
        out[start : start + len(chunk)] = _chunk_features(chunk, config, tables).cpu().numpy()
    return out


def _all_finite(x: torch.Tensor) -> bool:
    """Whether x holds no NaN or infinity: min and max propagate both, in one pass.

    torch.isfinite(x).all() writes a bool copy first and measured ~0.13 ms per clip on a CPU,
    ~10x this.
    """
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _chunk_features(y: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """y (n, samples) float32 on the tables' device -> (n, frames, feature_dim) float32."""
    if t.device.type == "cpu":
        feats, power = _base_features_cpu(y, config, t)
    else:
        power = _stft_power(y, config, t)
        feats = _mel_bands(power @ t.mel.T, config) if config.is_mel_bands else _base_features_torch(power, t)
    if config.chroma:
        feats = torch.cat([feats, _chroma(power, _tuning_bins(power, config, t), config, t)], dim=2)
    if config.deltas:
        feats = torch.cat([feats, _delta(feats, t)], dim=2)
    return feats


def _base_features_torch(power: torch.Tensor, t: _Tables) -> torch.Tensor:
    """power (n, frames, bins) -> (n, frames, n_mfcc + 8): MFCC, centroid (Hz), contrast (dB), by torch ops."""
    mag = torch.sqrt(power)
    return torch.cat([_mfcc(power, t), _centroid(mag, t), _contrast(mag, t)], dim=2)


def _stft_power(y: torch.Tensor, config: FeatureConfig, t: _Tables) -> torch.Tensor:
    """|STFT|^2 as (n, frames, 1 + n_fft // 2) float32: periodic Hann, centred, padded by config.pad_mode.

    Computed in float64 and rounded to complex64, as librosa does (see the module notes).
    Frames-first layout keeps every later reduction over frequency on the contiguous axis.
    re^2 + im^2 avoids abs()'s slower hypot; magnitudes are its square root.
    """
    half = config.n_fft // 2
    padded = torch.nn.functional.pad(y.to(torch.float64), (half, half), mode=config.pad_mode)
    windows = padded.unfold(-1, config.n_fft, config.hop_length)
    frames = torch.mul(windows, t.window, out=_workspace("frames", windows.shape, torch.float64, y.device))
    spec = torch.fft.rfft(frames, dim=-1)  # out= would only add a copy (MKL writes a new tensor)
    parts = torch.view_as_real(spec.to(torch.complex64))
    return parts[..., 0].square() + parts[..., 1].square()


_WORKSPACE = threading.local()


def _workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A scratch tensor kept per thread for CPU work, else a new one.

    Float64 frames are ~2 MB per clip; allocating them fresh every chunk costs ~1 ms of page
    faults per clip (glibc maps and unmaps such blocks), more than the FFT itself. Reused,
    they stay mapped (and in cache). Contents are undefined.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    cached = getattr(_WORKSPACE, name, None)
    if cached is None or cached.shape != torch.Size(shape) or cached.dtype != dtype:
        cached = torch.empty(shape, dtype=dtype)
        setattr(_WORKSPACE, name, cached)
    return cached


def _mel_bands(mel: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Mel energies (n, frames, 128) -> the "logmel" (dB) or "pcen" features, same shape and device.

    PCEN runs on the CPU (librosa.pcen, a recursive filter over 129 frames: small next to the STFT)."""
    if config.representation != "pcen":
        return _power_to_db(mel)
    values = pcen_mel(mel.transpose(1, 2).cpu().numpy(), config.sample_rate, config.hop_length)  # (n, 128, frames)
    return torch.from_numpy(values).transpose(1, 2).to(mel.device)


def _power_to_db(x: torch.Tensor) -> torch.Tensor:
    """librosa.power_to_db(ref=1, amin=1e-10, top_db=80) per clip: x (n, ...) -> dB, same shape."""
    db = torch.clamp(x, min=AMIN).log10_().mul_(10.0)  # one new tensor, then in place
    floor = db.flatten(1).amax(dim=1) - TOP_DB
    return torch.maximum(db, floor.view(-1, *([1] * (x.ndim - 1))), out=db)


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


# --- CPU: one float64 rfft per clip, then compiled kernels ---------------------------------

_NO_POWER = np.empty((0, 0), dtype=np.float32)


@dataclass
class _ClipKernelOutputs:
    """What _clip_kernel writes for a chunk of n clips, frames last (the kernels' SIMD lanes)."""

    mel: np.ndarray  # (n, 128, frames) float32 mel power
    centroid: np.ndarray  # (n, 1, frames) float32 Hz
    peaks: np.ndarray  # (n, bands, frames) float32 magnitudes
    valleys: np.ndarray  # (n, bands, frames) float32 magnitudes

    @classmethod
    def empty(cls, n: int, frames: int, bands: int) -> _ClipKernelOutputs:
        """Uninitialised outputs for n clips of `frames` frames and `bands` contrast bands."""
        shape = (n, bands, frames)
        return cls(np.empty((n, N_MELS, frames), np.float32), np.empty((n, 1, frames), np.float32),
                   np.empty(shape, np.float32), np.empty(shape, np.float32))


def _base_features_cpu(
    y: torch.Tensor, config: FeatureConfig, t: _Tables
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """_base_features_torch(_stft_power(y)) on a CPU: y (n, samples) float32 -> (features, power).

    Features (n, frames, n_mfcc + 8) float32. Power (n, frames, bins) float32, which chroma
    needs, only if config.chroma (else None). Clip by clip, so that its 2 MB float64
    spectrum is still in cache when the kernel reads it.
    """
    n, frames, bins = y.shape[0], config.total_frames, config.n_fft // 2 + 1
    out = _ClipKernelOutputs.empty(n, frames, len(t.bands))
    power = torch.empty((n, frames, bins)) if config.chroma else None
    power_t = _workspace("power_t", (bins, frames), torch.float32, y.device).numpy()
    for i in range(n):
        keep = power[i].numpy() if power is not None else _NO_POWER
        _clip_kernel(_unwindowed_spectrum(y[i], config), t.mel_support, t.mel_weights, t.freqs_cpu,
                     t.band_table, power_t, keep, out.mel[i], out.centroid[i, 0], out.peaks[i], out.valleys[i])
    if config.is_mel_bands:  # (n, 128, frames) mel energies -> (n, frames, 128)
        return _mel_bands(torch.from_numpy(out.mel).transpose(1, 2), config), power
    mfcc = t.dct @ _power_to_db(torch.from_numpy(out.mel))
    contrast = _power_to_db(torch.from_numpy(out.peaks)) - _power_to_db(torch.from_numpy(out.valleys))
    feats = torch.cat([mfcc, torch.from_numpy(out.centroid), contrast], dim=1)
    return feats.transpose(1, 2), power


def _unwindowed_spectrum(y: torch.Tensor, config: FeatureConfig) -> np.ndarray:
    """float64 rfft of one clip's centred frames (padded by config.pad_mode), with NO window applied.

    y (samples,) float32 on the CPU. Returns (frames, bins) complex128. The Hann window is
    applied in frequency by _hann_power, which saves writing out the windowed frames (2 MB
    per clip); the frames are a strided view of a per-thread padded copy of y.
    """
    half = config.n_fft // 2
    padded = _workspace("clip_padded", (y.shape[0] + 2 * half,), torch.float64, y.device)
    padded[half:-half] = y
    if config.pad_mode == "reflect":  # numpy's "reflect": the edge sample is not repeated
        padded[:half] = torch.flip(padded[half + 1 : 2 * half + 1], dims=(0,))
        padded[-half:] = torch.flip(padded[-2 * half - 1 : -half - 1], dims=(0,))
    else:
        padded[:half] = 0.0
        padded[-half:] = 0.0
    frames = padded.unfold(0, config.n_fft, config.hop_length)
    return torch.fft.rfft(frames, dim=-1).numpy()  # out= would only add a copy (MKL writes a new tensor)


@numba.njit(nogil=True, cache=True)
def _clip_kernel(
    spec: np.ndarray, mel_support: np.ndarray, mel_weights: np.ndarray, freqs: np.ndarray, bands: np.ndarray,
    power_t: np.ndarray, power: np.ndarray, mel: np.ndarray, centroid: np.ndarray, peaks: np.ndarray,
    valleys: np.ndarray,
) -> None:
    """One clip's unwindowed spectrum -> mel power, centroid and contrast extremes.

    spec (frames, bins) complex128 from _unwindowed_spectrum; the tables as in _Tables.
    power_t (bins, frames) float32 scratch; power (frames, bins) float32 is filled too
    unless it has no rows. Writes mel (128, frames), centroid (frames,) in Hz, and peaks,
    valleys (bands, frames): the mean of each band's k largest / smallest magnitudes.
    """
    _hann_power(spec, power_t, power)
    _mel_lanes(power_t, mel_support, mel_weights, mel)
    _centroid_lanes(power_t, freqs, centroid)
    for b in range(bands.shape[0]):
        start, end, k = bands[b, 0], bands[b, 1], bands[b, 2]
        _extreme_mean_lanes(power_t, start, end, k, np.float32(1.0), peaks[b])
        _extreme_mean_lanes(power_t, start, end, k, np.float32(-1.0), valleys[b])


@numba.njit(nogil=True, cache=True)
def _hann_power(spec: np.ndarray, power_t: np.ndarray, power: np.ndarray) -> None:
    """Power of the Hann-windowed frames: spec (frames, bins) complex128 -> power_t (bins, frames) float32.

    Rows go through a small tile (POWER_TILE frames, in L1) and are written transposed a
    tile at a time. Also writes power (frames, bins) if it has rows.
    """
    frames, bins = spec.shape
    tile = np.empty((POWER_TILE, bins), np.float32)
    for r0 in range(0, frames, POWER_TILE):
        n = min(POWER_TILE, frames - r0)
        for i in range(n):
            _hann_power_row(spec[r0 + i], tile[i])
        if power.shape[0] > 0:
            for i in range(n):
                for j in range(bins):
                    power[r0 + i, j] = tile[i, j]
        if n == POWER_TILE:  # a constant trip count: the copy below compiles to straight stores
            for j in range(bins):
                for i in range(POWER_TILE):
                    power_t[j, r0 + i] = tile[i, j]
        else:
            for j in range(bins):
                for i in range(n):
                    power_t[j, r0 + i] = tile[i, j]


@numba.njit(nogil=True, cache=True)
def _hann_power_row(x: np.ndarray, row: np.ndarray) -> None:
    """row (bins,) float32 = |X_w|^2 for one frame's unwindowed spectrum x (bins,) complex128.

    A periodic Hann window is 1/2 - cos/2, so in frequency X_w[j] = X[j]/2 - (X[j-1] + X[j+1])/4,
    in float64; at the ends X[-1] = conj(X[1]) and X[bins] = conj(X[bins - 2]) (real input).
    X_w is rounded to complex64, as librosa's stft returns it, and re^2 + im^2 taken in float32.
    """
    last = x.shape[0] - 1
    row[0] = _power32(0.5 * (x[0].real - x[1].real), 0.5 * x[0].imag)
    for j in range(1, last):
        w = 0.5 * x[j] - 0.25 * (x[j - 1] + x[j + 1])
        row[j] = _power32(w.real, w.imag)
    row[last] = _power32(0.5 * (x[last].real - x[last - 1].real), 0.5 * x[last].imag)


@numba.njit(nogil=True, cache=True)
def _power32(re: float, im: float) -> np.float32:
    """|re + i im|^2 after rounding both parts to float32 (float32 arithmetic)."""
    re32, im32 = np.float32(re), np.float32(im)
    return re32 * re32 + im32 * im32


@numba.njit(nogil=True, cache=True)
def _mel_lanes(power_t: np.ndarray, support: np.ndarray, weights: np.ndarray, mel: np.ndarray) -> None:
    """mel (filters, frames) = mel bank @ power_t (bins, frames), using only its nonzero weights.

    support (filters, 2) [first, end) bin and weights (flat) as built by _sparse_mel; float32
    sums like librosa's float32 matrix product.
    """
    frames = power_t.shape[1]
    w = 0
    for f in range(support.shape[0]):
        for r in range(frames):
            mel[f, r] = 0.0
        for j in range(support[f, 0], support[f, 1]):
            weight = weights[w]
            for r in range(frames):
                mel[f, r] += weight * power_t[j, r]
            w += 1


@numba.njit(nogil=True, cache=True)
def _centroid_lanes(power_t: np.ndarray, freqs: np.ndarray, centroid: np.ndarray) -> None:
    """centroid (frames,) Hz = sum(freqs * mag) / sum(mag) over bins, mag = sqrt(power_t); float64 sums.

    A frame whose magnitudes sum below float32's tiny is divided by 1, as librosa's
    normalize does (so a silent frame gives 0).
    """
    frames = power_t.shape[1]
    total = np.zeros(frames)
    weighted = np.zeros(frames)
    for j in range(power_t.shape[0]):
        for r in range(frames):
            mag = np.sqrt(power_t[j, r])
            total[r] += mag
            weighted[r] += freqs[j] * mag
    for r in range(frames):
        centroid[r] = weighted[r] / (total[r] if total[r] >= TINY32 else 1.0)


@numba.njit(nogil=True, cache=True)
def _extreme_mean_lanes(power_t: np.ndarray, start: int, end: int, k: int, sign: np.float32, out: np.ndarray) -> None:
    """out (frames,) = mean of the k largest (sign 1) or smallest (sign -1) magnitudes of bins [start, end).

    Per frame, k slots in ascending order of sign * magnitude. A new value passes down them
    from the top: the larger of (slot, value) stays, the smaller moves on, the last one
    falls out. No branch depends on a single frame, so the loops over frames run as SIMD
    lanes. A bin that beats no frame's k-th extreme is skipped; valleys are scanned from the
    top bin down (spectra mostly fall with frequency), so that skip is common for both.
    """
    frames = power_t.shape[1]
    slots = np.empty((k, frames), np.float32)
    for i in range(k):  # a loop, not slots[:] = -inf, which stops the loops below from vectorising
        for r in range(frames):
            slots[i, r] = -np.inf
    carry = np.empty(frames, np.float32)
    for step in range(end - start):
        j = start + step if sign > 0 else end - 1 - step
        entering = 0
        for r in range(frames):
            value = sign * np.sqrt(power_t[j, r])
            carry[r] = value
            entering += value > slots[0, r]
        if entering == 0:
            continue
        for i in range(k - 1, -1, -1):
            for r in range(frames):
                kept, new = slots[i, r], carry[r]
                slots[i, r] = max(kept, new)
                carry[r] = min(kept, new)
    for r in range(frames):
        total = np.float32(0.0)
        for i in range(k):
            total += slots[i, r]
        out[r] = sign * total / k


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
