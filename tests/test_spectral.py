"""engine.spectral against librosa 0.11, on a few short synthetic clips.

Error measure (`_rel_err`): for each clip and each feature column, max over frames of
|ours - librosa| divided by (max over frames of |librosa| + 1e-6). The 1e-6 keeps columns
that librosa gives as ~0 everywhere (the delta of a constant chroma row) from dividing by 0.
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import torch

import engine.spectral as spectral
from engine.config import FeatureConfig
from engine.errors import AudioError, ConfigError
from engine.spectral import batch_spectral_features

SR = 22050
SAMPLES = 16384  # 0.74 s, 33 frames: short keeps the librosa reference fast


def _clips() -> np.ndarray:
    """(5, SAMPLES) float32: chord + noise, decaying vibrato note, near-silent, loud, detuned."""
    rng = np.random.default_rng(7)
    t = np.arange(SAMPLES) / SR
    noise = rng.standard_normal(SAMPLES)
    chord = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660.5 * t) + 0.01 * noise
    vibrato = np.sin(2 * np.pi * 5 * t)
    note = np.exp(-4 * t) * sum(np.sin(2 * np.pi * 196 * h * t + vibrato) / h for h in (1, 2, 3))
    note = note + 0.001 * rng.standard_normal(SAMPLES)
    quiet = 1e-5 * rng.standard_normal(SAMPLES)
    loud = np.clip(3 * np.sin(2 * np.pi * 110 * t) + 0.5 * rng.standard_normal(SAMPLES), -1, 1)
    detuned = 0.5 * np.sin(2 * np.pi * 452 * t) * (t < 0.5) + 0.02 * rng.standard_normal(SAMPLES)
    return np.stack([chord, note, quiet, loud, detuned]).astype(np.float32)


def _librosa(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The study's librosa calls for one clip -> (frames, feature_dim)."""
    rows = [
        librosa.feature.mfcc(y=y, sr=SR, n_mfcc=config.n_mfcc),
        librosa.feature.spectral_centroid(y=y, sr=SR),
        librosa.feature.spectral_contrast(y=y, sr=SR),
    ]
    if config.chroma:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "estimate tuning from empty frequency set"
            rows.append(librosa.feature.chroma_stft(y=y, sr=SR))
    feats = np.concatenate(rows)
    if config.deltas:
        feats = np.concatenate([feats, librosa.feature.delta(feats)])
    return feats.T


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(frames, cols) pair -> (cols,) max |ours - ref| / (max |ref| + 1e-6) per column."""
    return np.abs(ours - ref).max(axis=0) / (np.abs(ref).max(axis=0) + 1e-6)


def _tolerances(config: FeatureConfig) -> np.ndarray:
    """(feature_dim,): 1e-3 for MFCC and centroid, 1e-2 for contrast, chroma and deltas."""
    base = [1e-3] * (config.n_mfcc + 1) + [1e-2] * 7 + ([1e-2] * 12 if config.chroma else [])
    return np.array(base + ([1e-2] * len(base) if config.deltas else []))


def _resampled_clips() -> np.ndarray:
    """(2, SAMPLES) float32 made at 44,100 Hz and resampled like librosa.load (soxr HQ).

    The resampler leaves almost nothing near Nyquist, so the top contrast band's valley sits
    ~160 dB below the frame's peak: this is what catches a float32 STFT (the dataset's case).
    """
    rng = np.random.default_rng(11)
    t = np.arange(2 * SAMPLES) / (2 * SR)
    tone = sum(np.sin(2 * np.pi * 262 * h * t) / h for h in range(1, 12)) * np.exp(-2 * t)
    noisy = 0.3 * np.sin(2 * np.pi * 880 * t) + 0.05 * rng.standard_normal(len(t))
    return np.stack([librosa.resample(x.astype(np.float32), orig_sr=2 * SR, target_sr=SR, res_type="soxr_hq")
                     for x in (tone, noisy)])


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return _clips()


@pytest.mark.parametrize("chroma, deltas", [(False, False), (True, True), (True, False)])
def test_matches_librosa(clips: np.ndarray, chroma: bool, deltas: bool) -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=chroma, deltas=deltas)
    ours = batch_spectral_features(clips, config)
    assert ours.shape == (len(clips), config.total_frames, config.feature_dim)
    assert ours.dtype == np.float32
    tol = _tolerances(config)
    for i, y in enumerate(clips):
        err = _rel_err(ours[i], _librosa(y, config))
        assert np.all(err <= tol), f"clip {i}: columns {np.flatnonzero(err > tol)} errors {err[err > tol]}"


def test_resampled_audio_matches_librosa() -> None:
    config = FeatureConfig(clip_samples=SAMPLES)
    resampled = _resampled_clips()
    ours = batch_spectral_features(resampled, config)
    tol = _tolerances(config)
    for i, y in enumerate(resampled):
        err = _rel_err(ours[i], _librosa(y, config))
        assert np.all(err <= tol), f"clip {i}: columns {np.flatnonzero(err > tol)} errors {err[err > tol]}"


def test_cpu_kernel_equals_torch_topk(clips: np.ndarray) -> None:
    """The compiled CPU contrast kernel and the torch.topk path (used on GPUs) agree."""
    config = FeatureConfig(clip_samples=SAMPLES)
    tables = spectral._tables(config, "cpu")
    mag = spectral._stft_magnitude(torch.from_numpy(np.concatenate([clips, _resampled_clips()])), config, tables)
    for kernel, reference in zip(spectral._band_extremes_cpu(mag, tables), spectral._band_extremes_torch(mag, tables)):
        torch.testing.assert_close(kernel, reference, rtol=1e-6, atol=0)


def test_tuning_matches_librosa(clips: np.ndarray) -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True)
    tables = spectral._tables(config, "cpu")
    mag = spectral._stft_magnitude(torch.from_numpy(clips), config, tables)
    ours = [spectral.TUNING_VALUES[k] for k in spectral._tuning_bins(mag * mag, config, tables).tolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = [librosa.estimate_tuning(S=np.abs(librosa.stft(y)) ** 2, sr=SR) for y in clips]
    assert ours == pytest.approx(ref, abs=1e-12)
    assert any(abs(v) > 0.05 for v in ref)  # the detuned clip really exercises the estimate


def test_batch_equals_one_at_a_time(clips: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-clip steps (top_db, tuning) must not see the other clips of a batch."""
    monkeypatch.setattr(spectral, "CPU_CHUNK_CLIPS", 64)  # all clips in one chunk
    batch = np.concatenate([clips, np.zeros((1, SAMPLES), np.float32)])
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True, deltas=True)
    together = batch_spectral_features(batch, config)
    alone = np.concatenate([batch_spectral_features(y[None], config) for y in batch])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_empty_batch() -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True)
    empty = batch_spectral_features(np.zeros((0, SAMPLES), np.float32), config)
    assert empty.shape == (0, config.total_frames, config.feature_dim)


def test_chunks_give_the_same_result(clips: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    config = FeatureConfig(clip_samples=SAMPLES)
    whole = batch_spectral_features(clips, config)
    monkeypatch.setattr(spectral, "CPU_CHUNK_CLIPS", 1)
    chunked = batch_spectral_features(torch.from_numpy(clips), config)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


def test_silent_clip_is_finite_and_matches_librosa() -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True, deltas=True)
    silent = np.zeros((1, SAMPLES), np.float32)
    ours = batch_spectral_features(silent, config)[0]
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, _librosa(silent[0], config), rtol=1e-5, atol=1e-4)


def test_rejects_bad_input() -> None:
    config = FeatureConfig(clip_samples=SAMPLES)
    with pytest.raises(AudioError):
        batch_spectral_features(np.zeros(SAMPLES, np.float32), config)
    with pytest.raises(AudioError):
        batch_spectral_features(np.full((1, SAMPLES), np.nan, np.float32), config)
    with pytest.raises(AudioError):
        batch_spectral_features(np.zeros((1, SAMPLES - 1), np.float32), config)
    with pytest.raises(ConfigError):
        batch_spectral_features(np.zeros((1, SAMPLES), np.float32), FeatureConfig(representation="waveform"))
    with pytest.raises(ConfigError):
        batch_spectral_features(np.zeros((1, 2048), np.float32), FeatureConfig(clip_samples=2048, deltas=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(clips: np.ndarray) -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True, deltas=True)
    np.testing.assert_allclose(
        batch_spectral_features(clips, config, device="cuda"),
        batch_spectral_features(clips, config),
        rtol=1e-4,
        atol=1e-4,
    )
