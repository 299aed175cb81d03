"""engine.features.spectral against librosa 0.11, on a few short synthetic clips.

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

import engine.features.spectral as spectral
from engine.core.config import FeatureConfig
from engine.core.errors import AudioError, ConfigError
from engine.features.spectral import batch_spectral_features

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


# Relative errors (`_rel_err`) measured on these clips (2026-11-30, librosa 0.11, x86-64 with
# AVX-512): MFCC + centroid 2.2e-5 (the near-silent clip; 2e-6 elsewhere), contrast 3.5e-7,
# chroma 1.0e-6, deltas 8.5e-5. Tolerances: about 10x those, for other CPUs' rounding.
TOL_MFCC_CENTROID, TOL_CONTRAST, TOL_CHROMA, TOL_DELTAS = 2e-4, 4e-6, 1e-5, 1e-3


def _tolerances(config: FeatureConfig) -> np.ndarray:
    """(feature_dim,) relative-error tolerances per column (see the measured errors above)."""
    base = ([TOL_MFCC_CENTROID] * (config.n_mfcc + 1) + [TOL_CONTRAST] * 7
            + ([TOL_CHROMA] * 12 if config.chroma else []))
    return np.array(base + ([TOL_DELTAS] * len(base) if config.deltas else []))


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


def _random_spectra(rng: np.random.Generator, frames: int, bins: int) -> np.ndarray:
    """(frames, bins) complex128 unwindowed spectra over ~180 dB, with one silent and one one-peak frame."""
    magnitude = 10.0 ** rng.uniform(-9, 0, (frames, bins))
    spec = magnitude * np.exp(2j * np.pi * rng.uniform(size=(frames, bins)))
    spec[:, [0, -1]] = spec[:, [0, -1]].real  # rfft of real frames: DC and Nyquist are real
    spec[1] = 0.0
    spec[2] = 1e-12
    spec[2, 300] = 1.0
    return spec


def _hann_power_reference(spec: np.ndarray) -> np.ndarray:
    """(frames, bins) float32 |X_w|^2 by numpy: 3-tap Hann in frequency, complex64, re^2 + im^2."""
    padded = np.concatenate([np.conj(spec[:, 1:2]), spec, np.conj(spec[:, -2:-1])], axis=1)
    windowed = (0.5 * padded[:, 1:-1] - 0.25 * (padded[:, :-2] + padded[:, 2:])).astype(np.complex64)
    return windowed.real * windowed.real + windowed.imag * windowed.imag


def _rendered_clips() -> np.ndarray:
    """(4, 65,536) float32: sampled instruments (guitar, flute, piano, violin; both demo
    soundfonts) rendered at 44.1 kHz like the demo dataset and resampled like librosa.load."""
    from engine.data import demo
    from engine.data.audio import resample

    timgm, merlin = demo._soundfont_paths()
    specs = [demo.ClipSpec(subset="training", class_id=class_id, song_id=0, uuid4="", song_seed=100 + class_id,
                           clip_seed=200 + class_id, soundfont=str(font), out_path="unused.wav")
             for class_id, font in ((1, timgm), (3, merlin), (4, timgm), (7, merlin))]
    return np.stack([resample(demo.render_clip(spec), 2 * SR, SR) for spec in specs])


def test_rendered_instruments_match_librosa() -> None:
    """Real sampled-instrument audio, full 3-second clips: the CPU kernels stay ~1e-6 from librosa."""
    config = FeatureConfig(frames=None)
    clips = _rendered_clips()
    ours = batch_spectral_features(clips, config)
    for i, y in enumerate(clips):
        err = _rel_err(ours[i], _librosa(y, config))
        assert np.all(err <= _tolerances(config)), f"clip {i}: errors {err}"
        assert err.max() < 2e-5, f"clip {i}: errors {err} (measured: at most 1.9e-6)"


def test_cpu_kernels_equal_torch_formulas_on_random_spectra() -> None:
    """Each compiled CPU kernel against the plain formulas (torch matmul, sum, topk) on the same power."""
    config = FeatureConfig()
    t = spectral._tables(config, "cpu")
    spec = _random_spectra(np.random.default_rng(3), 37, config.n_fft // 2 + 1)
    power_t = np.empty(spec.shape[::-1], np.float32)
    power = np.empty(spec.shape, np.float32)
    spectral._hann_power(spec, power_t, power)
    expected = _hann_power_reference(spec)
    np.testing.assert_array_equal(power, expected)
    np.testing.assert_array_equal(power_t, expected.T)

    out = spectral._ClipKernelOutputs.empty(1, spec.shape[0], len(t.bands))
    spectral._clip_kernel(spec, t.mel_support, t.mel_weights, t.freqs_cpu, t.band_table,
                          power_t, spectral._NO_POWER, out.mel[0], out.centroid[0, 0], out.peaks[0], out.valleys[0])
    reference = torch.from_numpy(expected)[None]
    mag = reference.sqrt()
    torch.testing.assert_close(torch.from_numpy(out.mel).transpose(1, 2), reference @ t.mel.T, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.from_numpy(out.centroid).transpose(1, 2), spectral._centroid(mag, t),
                               rtol=1e-5, atol=1e-3)
    peaks, valleys = spectral._band_extremes_torch(mag, t)
    torch.testing.assert_close(torch.from_numpy(out.peaks).transpose(1, 2), peaks, rtol=1e-6, atol=0)
    torch.testing.assert_close(torch.from_numpy(out.valleys).transpose(1, 2), valleys, rtol=1e-6, atol=0)


def test_sparse_mel_is_the_dense_bank() -> None:
    t = spectral._tables(FeatureConfig(), "cpu")
    dense = np.zeros(t.mel.shape, np.float32)
    w = 0
    for f, (first, end) in enumerate(t.mel_support):
        dense[f, first:end] = t.mel_weights[w : w + end - first]
        w += end - first
    assert w == len(t.mel_weights) <= 2 * t.mel.shape[1]  # each bin feeds at most 2 filters
    np.testing.assert_array_equal(dense, t.mel.numpy())


def test_hann_in_frequency_equals_windowed_stft(clips: np.ndarray) -> None:
    """_unwindowed_spectrum + _hann_power (CPU) against the time-domain-windowed _stft_power (GPU path)."""
    config = FeatureConfig(clip_samples=SAMPLES)
    t = spectral._tables(config, "cpu")
    audio = torch.from_numpy(np.concatenate([clips, _resampled_clips()]))
    reference = spectral._stft_power(audio, config, t).numpy()
    for y, expected in zip(audio, reference):
        spec = spectral._unwindowed_spectrum(y, config)
        power = np.empty(spec.shape, np.float32)
        spectral._hann_power(spec, np.empty(spec.shape[::-1], np.float32), power)
        scale = expected.max(axis=1, keepdims=True) + 1e-30
        assert np.abs(power - expected).max() / scale.max() < 1e-12
        audible = expected > 1e-14 * scale  # down to -140 dB, far above float64 rounding of the peak
        np.testing.assert_allclose(power[audible], expected[audible], rtol=1e-6)


def test_cpu_path_equals_torch_path(clips: np.ndarray) -> None:
    """The CPU kernels and the torch ops (the GPU path, run here on the CPU) give the same features."""
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True)
    t = spectral._tables(config, "cpu")
    audio = torch.from_numpy(np.concatenate([clips, _resampled_clips()]))
    reference_power = spectral._stft_power(audio, config, t)
    reference = spectral._base_features_torch(reference_power, t).numpy()
    ours, power = spectral._base_features_cpu(audio, config, t)
    torch.testing.assert_close(power, reference_power, rtol=1e-4, atol=1e-6 * float(reference_power.max()))
    for i in range(len(audio)):
        err = _rel_err(ours[i].numpy(), reference[i])
        assert err.max() < 1e-5, f"clip {i}: errors {err}"


def test_tuning_matches_librosa(clips: np.ndarray) -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True)
    tables = spectral._tables(config, "cpu")
    power = spectral._stft_power(torch.from_numpy(clips), config, tables)
    ours = [spectral.TUNING_VALUES[k] for k in spectral._tuning_bins(power, config, tables).tolist()]
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
    for bad in (np.nan, np.inf, -np.inf):
        clips = np.zeros((2, SAMPLES), np.float32)
        clips[1, 123] = bad
        with pytest.raises(AudioError):
            batch_spectral_features(clips, config)
    with pytest.raises(AudioError):
        batch_spectral_features(np.zeros((1, SAMPLES - 1), np.float32), config)
    with pytest.raises(ConfigError):
        batch_spectral_features(np.zeros((1, SAMPLES), np.float32), FeatureConfig(representation="waveform"))
    with pytest.raises(ConfigError):
        batch_spectral_features(np.zeros((1, 2048), np.float32), FeatureConfig(clip_samples=2048, deltas=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("inputs", ["librosa_0.11", "librosa_0.7"])
def test_cuda_matches_cpu(clips: np.ndarray, inputs: str) -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=True, deltas=True, inputs=inputs)
    np.testing.assert_allclose(
        batch_spectral_features(clips, config, device="cuda"),
        batch_spectral_features(clips, config),
        rtol=1e-4,
        atol=1e-4,
    )


# --------------------------------------------------------------------------- the study's 2019 inputs


def _librosa_reflect(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The study's feature calls with librosa 0.6/0.7's STFT padding: pad_mode="reflect"."""
    rows = [
        librosa.feature.mfcc(y=y, sr=SR, n_mfcc=config.n_mfcc, pad_mode="reflect"),
        librosa.feature.spectral_centroid(y=y, sr=SR, pad_mode="reflect"),
        librosa.feature.spectral_contrast(y=y, sr=SR, pad_mode="reflect"),
    ]
    if config.chroma:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows.append(librosa.feature.chroma_stft(y=y, sr=SR, pad_mode="reflect"))
    return np.concatenate(rows).T


@pytest.mark.parametrize("chroma", [False, True])
def test_study_2019_inputs_match_librosa_with_reflect_padding(clips: np.ndarray, chroma: bool) -> None:
    config = FeatureConfig(clip_samples=SAMPLES, chroma=chroma, inputs="librosa_0.7")
    assert config.pad_mode == "reflect"
    t = spectral._tables(config, "cpu")
    audio = torch.from_numpy(clips)
    torch_path = spectral._base_features_torch(spectral._stft_power(audio, config, t), t).numpy()
    ours = batch_spectral_features(clips, config)  # the CPU kernels
    current = batch_spectral_features(clips, FeatureConfig(clip_samples=SAMPLES, chroma=chroma))
    tol = _tolerances(config)
    for i, y in enumerate(clips):
        ref = _librosa_reflect(y, config)
        err = _rel_err(ours[i], ref)
        assert np.all(err <= tol), f"clip {i}: columns {np.flatnonzero(err > tol)} errors {err[err > tol]}"
        base = config.n_mfcc + 8
        assert _rel_err(torch_path[i], ref[:, :base]).max() <= TOL_MFCC_CENTROID
        # frames 2 .. n-3 never see the padding: centroid and contrast equal the current inputs'
        # (MFCC can move everywhere: power_to_db's top_db floor follows the clip's loudest frame)
        mfcc = config.n_mfcc
        np.testing.assert_array_equal(ours[i, 2:-2, mfcc:mfcc + 8], current[i, 2:-2, mfcc:mfcc + 8])
    # ...and the first frames do differ (the study model sees frames 0-2)
    assert np.abs(ours[:, :2] - current[:, :2]).max() > 1.0


def test_study_2019_librosa_backend_uses_reflect_padding(clips: np.ndarray) -> None:
    from engine.features.extract import librosa_features

    config = FeatureConfig(clip_samples=SAMPLES, inputs="librosa_0.7")
    for y in clips[:2]:
        np.testing.assert_allclose(librosa_features(y, config), _librosa_reflect(y, config), rtol=1e-6, atol=1e-5)
