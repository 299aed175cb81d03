"""Feature extraction: values against direct librosa calls, shapes, cache behaviour."""

from __future__ import annotations

from dataclasses import replace

import librosa
import numpy as np
import pytest

from engine.features import extract as F
from engine.data.audio import load_audio
from engine.core.config import FeatureConfig, RunConfig
from engine.data.dataset import load_dataset
from engine.core.errors import ConfigError
from engine.features.extract import clip_features, fit_standardizer, load_features

SPECTRAL = FeatureConfig(frames=None)


@pytest.fixture
def small_ds(make_tiny_dataset):
    """6 clips: classes 0 and 3, one per split."""
    return load_dataset(make_tiny_dataset(per_class=1, classes=(0, 3)))


def study_features(path) -> np.ndarray:
    """The study's code: librosa.load + three feature calls, stacked as (frames, 21)."""
    y, sr = librosa.load(path)
    rows = [
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13),
        librosa.feature.spectral_centroid(y=y, sr=sr),
        librosa.feature.spectral_contrast(y=y, sr=sr),
    ]
    return np.concatenate(rows).T


def column_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(frames, cols) pair -> (cols,): max |ours - ref| over frames / (max |ref| + 1e-6)."""
    return np.abs(ours - ref).max(axis=0) / (np.abs(ref).max(axis=0) + 1e-6)


def test_librosa_backend_matches_the_study_code(small_ds):
    path = small_ds.clips[0].path
    ours = clip_features(load_audio(path), SPECTRAL, backend="librosa")
    ref = study_features(path)
    assert ours.shape == ref.shape == (129, 21)
    assert ours.dtype == np.float32
    # per column, relative to its largest value: measured 5.7e-8 (float32 rounding)
    assert column_error(ours, ref).max() < 1e-6
    assert ours[:, 13].mean() > 100  # column 13 is the centroid, in Hz
    np.testing.assert_allclose(ours[:, 13], ref[:, 13], rtol=1e-6)


def test_torch_backend_agrees_with_librosa(small_ds):
    y = load_audio(small_ds.clips[1].path)
    ref = clip_features(y, SPECTRAL, backend="librosa")
    fast = clip_features(y, SPECTRAL, backend="torch")
    err = column_error(fast, ref)  # measured on these clips: MFCC + centroid <= 2.2e-6, contrast <= 2e-7
    assert err[:14].max() < 2e-5 and err[14:].max() < 2e-6, err


def test_chroma_and_deltas_extend_each_frame(small_ds):
    y = load_audio(small_ds.clips[3].path)  # class 3: harmonics above 150 Hz, so chroma has a tuning
    config = FeatureConfig(frames=None, chroma=True, deltas=True)
    x = clip_features(y, config, backend="librosa")
    assert x.shape == (129, 66) == (config.num_frames, config.feature_dim)
    base = clip_features(y, replace(config, deltas=False), backend="librosa")
    np.testing.assert_allclose(x[:, :33], base, rtol=1e-6)
    chroma = librosa.feature.chroma_stft(y=y, sr=22050)
    np.testing.assert_allclose(x[:, 21:33], chroma.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x[:, 33:], librosa.feature.delta(base.T).T, rtol=1e-4, atol=1e-4)


def test_frames_keep_the_first_frames_and_short_input_is_padded():
    y = np.random.default_rng(1).standard_normal(30000).astype(np.float32) * 0.1
    whole = clip_features(y, SPECTRAL, backend="librosa")
    first = clip_features(y, FeatureConfig(frames=3), backend="librosa")
    assert first.shape == (3, 21)
    np.testing.assert_array_equal(first, whole[:3])
    assert whole[-1, 13] == 0.0  # the padded tail is silence: centroid 0


def test_waveform_frames_are_the_clip_cut_into_pieces():
    y = np.random.default_rng(2).uniform(-1, 1, 70000).astype(np.float32)
    config = FeatureConfig(representation="waveform", frames=None)
    x = clip_features(y, config)
    assert x.shape == (128, 512) and x.dtype == np.float32
    np.testing.assert_allclose(x.reshape(-1), y[:65536], rtol=1e-3, atol=1e-7)
    assert clip_features(y, replace(config, frames=5)).shape == (5, 512)


def test_load_features_shapes_labels_and_order(small_ds, medley_cache):
    seen = []
    data = load_features(small_ds, FeatureConfig(), progress=lambda d, t, m: seen.append((d, t)))
    assert set(data) == {"training", "validation", "test"}
    for split, fs in data.items():
        clips = small_ds.subset(split)
        assert fs.x.shape == (len(clips), 3, 21) and fs.x.dtype == np.float32
        assert fs.y.dtype == np.int64 and list(fs.y) == [c.label for c in clips]
        assert fs.ids == [c.uuid for c in clips]
    assert seen[-1] == (6, 6)
    direct = clip_features(load_audio(small_ds.subset("test")[1].path), FeatureConfig())
    np.testing.assert_allclose(data["test"].x[1], direct, rtol=1e-6)


def test_librosa_backend_dataset_path(small_ds, medley_cache):
    data = load_features(small_ds, FeatureConfig(frames=2), backend="librosa")
    clip = small_ds.subset("validation")[0]
    assert column_error(data["validation"].x[0], study_features(clip.path)[:2]).max() < 1e-6


def count_extractions(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = F._extract

    def counting(files, *args, **kwargs):
        calls.append(len(files))
        return original(files, *args, **kwargs)

    monkeypatch.setattr(F, "_extract", counting)
    return calls


def test_cache_is_hit_shared_across_frames_and_missed_on_config_change(small_ds, medley_cache, monkeypatch):
    calls = count_extractions(monkeypatch)
    first = load_features(small_ds, FeatureConfig(frames=3))
    assert calls == [2, 2, 2]
    again = load_features(small_ds, FeatureConfig(frames=None))
    assert calls == [2, 2, 2]
    np.testing.assert_array_equal(again["training"].x[:, :3], first["training"].x)
    assert again["training"].x.shape == (2, 129, 21)
    load_features(small_ds, FeatureConfig(frames=3, chroma=True))
    assert calls == [2, 2, 2] * 2
    load_features(small_ds, FeatureConfig(), use_cache=False)
    assert len(calls) == 9
    assert len(list((medley_cache / "features").glob("*.npy"))) == 6


def test_corrupt_cache_file_is_recomputed(small_ds, medley_cache, monkeypatch):
    config = FeatureConfig(frames=None)
    first = load_features(small_ds, config)
    path = F.cache_path(small_ds, config, "test")
    path.write_bytes(b"\x93NUMPY garbage")
    calls = count_extractions(monkeypatch)
    again = load_features(small_ds, config)
    assert calls == [2]
    np.testing.assert_array_equal(again["test"].x, first["test"].x)
    assert np.load(path, allow_pickle=False).shape == (2, 129, 21)


def test_waveform_cache_is_float16_and_skipped_when_too_big(small_ds, medley_cache, monkeypatch):
    config = FeatureConfig(representation="waveform", frames=4)
    data = load_features(small_ds, config)
    assert data["training"].x.shape == (2, 4, 512)
    stored = np.load(F.cache_path(small_ds, config, "training"), allow_pickle=False)
    assert stored.dtype == np.float16 and stored.shape == (2, 128, 512)
    np.testing.assert_array_equal(stored[:, :4].astype(np.float32), data["training"].x)
    monkeypatch.setattr(F, "WAVEFORM_CACHE_BYTES", 1000)
    other = replace(config, waveform_frame=256)
    again = load_features(small_ds, other)
    assert again["test"].x.shape == (2, 4, 256)
    assert not F.cache_path(small_ds, other, "test").exists()


def test_fit_standardizer_over_clips_and_frames():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, size=(40, 3, 4)).astype(np.float32)
    x[:, :, 2] = 7.0
    mean, std = fit_standardizer(x)
    assert mean.shape == std.shape == (4,)
    np.testing.assert_allclose(mean, x.reshape(-1, 4).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std[[0, 1, 3]], x.reshape(-1, 4).std(axis=0)[[0, 1, 3]], rtol=1e-4)
    assert std[2] == pytest.approx(F.STD_FLOOR)


def test_unknown_backend_is_a_config_error(small_ds):
    with pytest.raises(ConfigError, match="'numpy'"):
        load_features(small_ds, FeatureConfig(), backend="numpy")


# ---- the study's 2019 inputs (librosa 0.6/0.7) -------------------------------------------------


def study_2019_features(path) -> np.ndarray:
    """The study's code as it ran in 2019: librosa.load with resampy's kaiser_best, STFT frames
    padded by reflection (librosa 0.11 still offers both), (frames, 21)."""
    y, sr = librosa.load(path, res_type="kaiser_best")
    return np.concatenate([
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13, pad_mode="reflect"),
        librosa.feature.spectral_centroid(y=y, sr=sr, pad_mode="reflect"),
        librosa.feature.spectral_contrast(y=y, sr=sr, pad_mode="reflect"),
    ]).T


def test_study_2019_inputs_reproduce_the_2019_study_code(small_ds):
    path = small_ds.clips[1].path
    config = FeatureConfig(frames=None, inputs="librosa_0.7")
    samples = F.decode_clip(path, config)
    reference, _ = librosa.load(path, res_type="kaiser_best")
    np.testing.assert_array_equal(samples, reference)  # the same resampler, bit for bit
    assert np.abs(samples - F.decode_clip(path, FeatureConfig())).max() > 1e-4  # soxr differs
    ref = study_2019_features(path)
    for backend in ("librosa", "torch"):
        assert column_error(clip_features(samples, config, backend=backend), ref).max() < 2e-5, backend
    # the current inputs do not reproduce it: frames 0-1 differ by far more than rounding
    assert column_error(clip_features(F.decode_clip(path, FeatureConfig()), SPECTRAL)[:2], ref[:2]).max() > 1e-3


def test_study_presets_use_the_2019_inputs_and_digests_stay():
    from engine.data.audio import resample
    from engine.core.errors import AudioError
    from engine.learn.presets import RECOMMENDED, STUDY_BASE, study_ablation
    from engine.runs.store import group_key

    assert all(config.features.inputs == "librosa_0.7" for _, config in study_ablation())
    assert STUDY_BASE.features.pad_mode == "reflect" and STUDY_BASE.features.resampler == "kaiser_best"
    assert RECOMMENDED.features.inputs == "librosa_0.11"
    # a different feature cache and seed group for the 2019 inputs...
    assert STUDY_BASE.features.digest() != FeatureConfig().digest()
    assert group_key(STUDY_BASE) != group_key(STUDY_BASE.with_values(**{"features.inputs": "librosa_0.11"}))
    # ...while the digests of configurations made before the option existed do not change
    assert FeatureConfig().digest() == "c23a595ba3ac51b2" and group_key(RunConfig()) == "9f2c1e9497a1f01f"
    # the recommended preset as it was before per-clip CMVN and outlier exposure (later fields) were added to it
    assert RECOMMENDED.with_values(**{"features.clip_norm": False, "train.outlier_exposure": 0.0}).digest() == "759a019778c09ed9"
    assert RunConfig.from_json(STUDY_BASE.to_json()) == STUDY_BASE
    with pytest.raises(ConfigError, match="inputs"):
        FeatureConfig(inputs="librosa_0.5")
    with pytest.raises(AudioError, match="resampler"):
        resample(np.zeros(100, np.float32), 44100, 22050, method="linear")


@pytest.mark.parametrize("orig_sr, target_sr, samples", [(44100, 22050, 131072), (44100, 22050, 1001),
                                                          (88200, 22050, 9000), (48000, 22050, 9600)])
def test_kaiser_best_equals_resampy(orig_sr, target_sr, samples):
    import resampy

    from engine.data.audio import resample

    y = (0.3 * np.random.default_rng(samples).standard_normal(samples)).astype(np.float32)
    ours = resample(y, orig_sr, target_sr, method="kaiser_best")
    ref = resampy.resample(y, orig_sr, target_sr, filter="kaiser_best")
    assert ours.dtype == np.float32 and ours.shape == (int(np.ceil(samples * target_sr / orig_sr)),)
    n = min(len(ref), len(ours))
    np.testing.assert_array_equal(ours[:n], ref[:n])  # bit-identical, fast path (integer factors) or not


def test_cache_reads_never_use_ast(small_ds, medley_cache, monkeypatch):
    """numpy parses .npy headers with ast.literal_eval, which races Streamlit's ast.parse in
    another thread on CPython 3.11 (gh-106905: 'AST constructor recursion depth mismatch')."""
    import ast

    first = load_features(small_ds, FeatureConfig(frames=None))

    def no_ast(*args, **kwargs):
        raise SystemError("AST constructor recursion depth mismatch (before=54, after=52)")

    monkeypatch.setattr(ast, "parse", no_ast)
    monkeypatch.setattr(ast, "literal_eval", no_ast)
    calls = count_extractions(monkeypatch)
    again = load_features(small_ds, FeatureConfig(frames=None))
    assert calls == []  # every split came from the cache
    np.testing.assert_array_equal(again["validation"].x, first["validation"].x)
    assert again["validation"].x.flags.writeable


def test_cache_file_of_another_shape_or_size_is_recomputed(small_ds, medley_cache, monkeypatch):
    config = FeatureConfig(frames=None)
    first = load_features(small_ds, config)
    path = F.cache_path(small_ds, config, "test")
    np.save(path, first["test"].x[:1])  # a valid .npy of another shape (the sidecar is stale too)
    calls = count_extractions(monkeypatch)
    assert load_features(small_ds, config)["test"].x.shape == (2, 129, 21) and calls == [2]
    with open(path, "ab") as handle:  # one byte too many
        handle.write(b"\0")
    assert load_features(small_ds, config)["test"].x.shape == (2, 129, 21) and calls == [2, 2]
