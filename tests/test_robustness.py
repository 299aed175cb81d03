"""Models that carry over: the cross-collection validation, augmentation, CMVN, log-mel,
statistics pooling and the robustness ablation. Synthetic arrays and the tiny dataset only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.data import augment
from engine.features import extract as features
from engine.compare.ablation import mean_std, protocol_split, select_by_cross_validation, summarize_rows
from engine.core.config import FeatureConfig, ModelConfig, RunConfig, TrainConfig
from engine.data.dataset import load_dataset
from engine.core.errors import ConfigError
from engine.features.extract import (
    FeatureSet, cache_path, clip_features, load_augmented_views, load_features, load_heldout_validation,
    load_program_validation, load_source_validation, normalize_clips,
)
from engine.runs.launch import plan_ablation
from engine.learn.model import build_model
from engine.learn.presets import RECOMMENDED, ROBUSTNESS_OPTIONS, robustness_ablation
from engine.learn.train import AUGMENTED, spec_mask, train_run
from engine.learn.trust import TRUST_KEYS

SR = 22050


def _tone(seconds: float = 1.0, f0: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)).astype(np.float32)


# --------------------------------------------------------------------------- audio transforms


def test_parse_augment_is_canonical_and_names_unknown_values():
    assert augment.parse_augment(" noise, EQ ,eq") == ("eq", "noise")
    assert augment.parse_augment("") == ()
    with pytest.raises(ConfigError, match="reverb"):
        augment.parse_augment("eq,reverb")
    assert TrainConfig(augment="noise,gain").augment == "gain,noise"  # stored in canonical order
    with pytest.raises(ConfigError, match="augment_views"):
        TrainConfig(augment_views=0)
    with pytest.raises(ConfigError, match="time_mask"):
        TrainConfig(time_mask=-1)


@pytest.mark.parametrize("names", [("gain",), ("eq",), ("speed",), ("noise",), augment.AUGMENTATIONS])
def test_augment_clip_is_seeded_changes_the_audio_and_keeps_the_shape(names):
    y = _tone()
    a = augment.augment_clip(y, SR, names, np.random.default_rng(1))
    b = augment.augment_clip(y, SR, names, np.random.default_rng(1))
    c = augment.augment_clip(y, SR, names, np.random.default_rng(2))
    assert a.shape == y.shape and a.dtype == np.float32 and np.isfinite(a).all() and np.abs(a).max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, y, atol=1e-4) and not np.allclose(a, c, atol=1e-4)


def test_heldout_chain_depends_on_the_clip_only_and_differs_from_training_augmentation():
    y = _tone()
    first = augment.heldout_chain(y, SR, "clip-a")
    np.testing.assert_array_equal(first, augment.heldout_chain(y.copy(), SR, "clip-a"))
    other = augment.heldout_chain(y, SR, "clip-b")
    assert first.shape == y.shape and np.isfinite(first).all() and np.abs(first).max() <= 1.0
    assert not np.allclose(first, other, atol=1e-4)
    # band-limited microphone: the energy above 8 kHz is mostly gone (training EQ never does this)
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    spectrum = np.abs(np.fft.rfft(augment.heldout_chain(noise, SR, "clip-a")))
    freqs = np.fft.rfftfreq(SR, 1 / SR)
    clean = np.abs(np.fft.rfft(noise))
    high = freqs > 8000
    ratio = (spectrum[high] ** 2).sum() / (spectrum ** 2).sum()
    assert ratio < 0.1 * (clean[high] ** 2).sum() / (clean ** 2).sum()


def _voice(f0: float, peak_hz: float = 1500.0, seconds: float = 2.0) -> np.ndarray:
    """A harmonic tone at f0 whose harmonics follow one resonance (a formant) at peak_hz."""
    t = np.arange(int(seconds * SR)) / SR
    harmonics = np.arange(1, int((SR / 2 - 500) // f0) + 1) * f0
    amplitudes = np.exp(-0.5 * (np.log2(harmonics / peak_hz) / 0.35) ** 2)
    y = (amplitudes[:, None] * np.sin(2 * np.pi * harmonics[:, None] * t[None, :])).sum(axis=0)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def _f0_semitones(a: np.ndarray, b: np.ndarray) -> float:
    import librosa

    def f0(y):
        return float(np.median(librosa.yin(y[SR // 4:-SR // 4], fmin=60, fmax=400, sr=SR)))
    return 12 * np.log2(f0(b) / f0(a))


def _envelope_semitones(a: np.ndarray, b: np.ndarray) -> float:
    """How far the power spectrum's log-frequency centroid moved from a to b, in semitones."""
    def centroid(y):
        power = np.abs(np.fft.rfft(y[SR // 4:SR // 4 + 32768] * np.hanning(32768))) ** 2
        freqs = np.fft.rfftfreq(32768, 1 / SR)
        keep = freqs > 50
        return np.exp((power[keep] * np.log(freqs[keep])).sum() / power[keep].sum())
    return 12 * np.log2(centroid(b) / centroid(a))


@pytest.mark.parametrize("uuid", ["clip-a", "clip-b", "clip-d"])
def test_heldout_source_moves_the_envelope_and_the_pitch_independently(uuid):
    """The source change does what its docstring says: the formant moves by `formant`
    semitones while the notes move by `pitch` (a resampling alone would move both together)."""
    formant, pitch = augment.source_shift(uuid)
    assert 2.0 <= abs(formant) <= 4.0 and abs(pitch) <= 2.0
    y = _voice(110.0)
    out = augment.heldout_source(y, SR, uuid)
    assert out.shape == y.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert _f0_semitones(y, out) == pytest.approx(pitch, abs=0.1)
    assert _envelope_semitones(y, out) == pytest.approx(formant, abs=0.3)
    np.testing.assert_array_equal(out, augment.heldout_source(y.copy(), SR, uuid))


def test_source_shifts_cover_both_directions_and_are_beyond_training_speed_perturbation():
    shifts = np.array([augment.source_shift(f"clip-{i}") for i in range(400)])
    assert (shifts[:, 0] > 0).mean() == pytest.approx(0.5, abs=0.1)
    assert np.abs(shifts[:, 0]).min() >= 2.0 > 1.0  # training "speed" moves the envelope by at most 1 semitone
    assert np.abs(shifts[:, 1]).max() <= 2.0 and shifts[:, 1].std() > 0.8


# --------------------------------------------------------------------------- features


def test_normalize_clips_centres_and_scales_each_clip_and_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(4, 50, 6)).astype(np.float32)
    x[1] = x[1] * 10 - 40  # another channel gain / offset: CMVN removes it
    x[2, :, 3] = 7.0  # a constant feature becomes 0, not NaN
    out = normalize_clips(x)
    assert out.shape == x.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=1)[[0, 1, 3]], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[[0, 1, 3]].std(axis=1), 1.0, atol=1e-4)
    assert np.all(out[2, :, 3] == 0.0)
    np.testing.assert_allclose(normalize_clips(x[1:2] * 0.5 + 3), out[1:2], atol=1e-4)


def test_clip_features_apply_cmvn_and_log_mel_matches_librosa():
    import librosa

    y = _tone(3.0) + 0.01 * np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)
    plain = clip_features(y, FeatureConfig(frames=None))
    normed = clip_features(y, FeatureConfig(frames=None, clip_norm=True))
    np.testing.assert_allclose(normed, normalize_clips(plain[None])[0], atol=1e-5)

    config = FeatureConfig(frames=None, representation="logmel")
    assert config.feature_dim == 128
    ours = clip_features(y, config)
    fitted = y[: config.clip_samples]  # the tone lasts longer than a clip: cut, as clip_features does
    reference = librosa.power_to_db(librosa.feature.melspectrogram(y=fitted, sr=SR, n_fft=2048, hop_length=512)).T
    assert ours.shape == reference.shape == (config.total_frames, 128)
    np.testing.assert_allclose(ours, reference, atol=2e-3)
    np.testing.assert_allclose(clip_features(y, config, backend="librosa"), reference, atol=2e-3)


@pytest.fixture
def tiny(tiny_dataset, medley_cache):
    return load_dataset(tiny_dataset)


def test_cross_collection_validation_is_cached_deterministic_and_never_touches_test(tiny, monkeypatch):
    config = FeatureConfig(frames=None)
    clean = load_features(tiny, config)
    seen: list[str] = []
    chain = augment.heldout_chain

    def spy(y, sr, uuid):
        seen.append(uuid)
        return chain(y, sr, uuid)

    monkeypatch.setattr(features, "heldout_chain", spy)
    shifted = load_heldout_validation(tiny, config)
    assert set(seen) == {c.uuid for c in tiny.subset("validation")}  # validation clips, every one, nothing else
    assert not set(seen) & {c.uuid for c in tiny.subset("test")}
    assert shifted.ids == clean["validation"].ids and np.array_equal(shifted.y, clean["validation"].y)
    assert shifted.x.shape == clean["validation"].x.shape and not np.allclose(shifted.x, clean["validation"].x)

    path = cache_path(tiny, config, "validation", variant=features.HELDOUT)
    assert path.exists() and path != cache_path(tiny, config, "validation")
    seen.clear()
    again = load_heldout_validation(tiny, config)  # from the cache: no audio transformed
    assert seen == [] and np.array_equal(again.x, shifted.x)
    fresh = load_heldout_validation(tiny, config, use_cache=False)
    np.testing.assert_allclose(fresh.x, shifted.x, atol=1e-5)
    # the clean validation features were not overwritten by the shifted ones
    np.testing.assert_array_equal(load_features(tiny, config)["validation"].x, clean["validation"].x)


def test_source_validation_is_cached_deterministic_and_never_touches_test(tiny, monkeypatch):
    """The source view: every validation clip (and no other) goes through the source change
    and then the same held-out chain as the channel view; cached under its own name."""
    config = FeatureConfig(frames=None)
    channel = load_heldout_validation(tiny, config)
    order: list[tuple[str, str]] = []
    source, chain = augment.heldout_source, augment.heldout_chain

    def spy_source(y, sr, uuid):
        order.append(("source", uuid))
        return source(y, sr, uuid)

    def spy_chain(y, sr, uuid):
        order.append(("chain", uuid))
        return chain(y, sr, uuid)

    monkeypatch.setattr(features, "heldout_source", spy_source)
    monkeypatch.setattr(features, "heldout_chain", spy_chain)
    shifted = load_source_validation(tiny, config)
    validation = {c.uuid for c in tiny.subset("validation")}
    assert {u for _, u in order} == validation and len(order) == 2 * len(validation)
    assert all(order.index(("source", u)) < order.index(("chain", u)) for u in validation)  # source, then channel
    assert shifted.ids == channel.ids and np.array_equal(shifted.y, channel.y)
    assert not np.allclose(shifted.x, channel.x)
    path = cache_path(tiny, config, "validation", variant=features.SOURCE)
    assert path.exists() and path not in {cache_path(tiny, config, "validation"),
                                          cache_path(tiny, config, "validation", variant=features.HELDOUT)}
    order.clear()
    again = load_source_validation(tiny, config)
    assert order == [] and np.array_equal(again.x, shifted.x)


def test_augmented_views_are_cached_apart_from_the_clean_clips(tiny):
    config = FeatureConfig(frames=5)
    clean = load_features(tiny, config)["training"].x
    views = load_augmented_views(tiny, config, ("eq", "gain"), 2, seed=3)
    assert views.shape == (2, *clean.shape)
    assert not np.allclose(views[0], clean) and not np.allclose(views[0], views[1])
    names = {p.name for p in cache_path(tiny, config, "training").parent.glob("*.npy")}
    tagged = [n for n in names if "aug1-eq.gain-s3-v" in n]
    assert len(tagged) == 2 and cache_path(tiny, config, "training").name in names
    np.testing.assert_array_equal(load_augmented_views(tiny, config, ("eq", "gain"), 2, seed=3), views)
    other_seed = load_augmented_views(tiny, config, ("eq", "gain"), 1, seed=4)
    assert not np.allclose(other_seed[0], views[0])
    np.testing.assert_array_equal(load_features(tiny, config)["training"].x, clean)


# --------------------------------------------------------------------------- model and training


def test_statistics_pooling_concatenates_mean_and_std():
    fc = FeatureConfig(frames=10)
    model = build_model(ModelConfig(arch="sequence", hidden_size=6, pooling="stats"), fc)
    assert model.head.in_features == 12
    assert model(torch.randn(3, 10, fc.feature_dim)).shape == (3, 8)


def test_spec_mask_masks_runs_within_the_limits_and_is_seeded():
    x = torch.ones(64, 30, 10)
    out = spec_mask(x, 5, 3, torch.Generator().manual_seed(0))
    again = spec_mask(x, 5, 3, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == x.shape
    zero_frames = (out == 0).all(dim=2).sum(dim=1)  # frames masked entirely, per clip
    zero_rows = (out == 0).all(dim=1).sum(dim=1)  # feature rows masked entirely, per clip
    assert zero_frames.max() <= 5 and zero_rows.max() <= 3
    assert zero_frames.float().mean() > 1.0 and zero_rows.float().mean() > 0.5
    assert torch.equal(spec_mask(x, 0, 0, torch.Generator()), x)


def _synthetic(n: int = 48, frames: int = 6, dim: int = 21, seed: int = 0) -> dict[str, FeatureSet]:
    rng = np.random.default_rng(seed)
    sets = {}
    for split in ("training", "validation", "validation_shift", "validation_source", "test"):
        y = rng.integers(0, 8, n)
        x = rng.normal(size=(n, frames, dim)).astype(np.float32) + y[:, None, None] * 0.5
        sets[split] = FeatureSet(x=x.astype(np.float32), y=y.astype(np.int64), ids=[f"{split}{i}" for i in range(n)])
    return sets


def test_train_run_reports_cross_collection_validation_and_reads_augmented_views():
    data = _synthetic()
    views = np.stack([data["training"].x + 0.3, data["training"].x - 0.3])
    data[AUGMENTED] = FeatureSet(x=views, y=data["training"].y, ids=data["training"].ids)
    config = RunConfig(features=FeatureConfig(frames=6), model=ModelConfig(arch="sequence", hidden_size=8),
                       train=TrainConfig(epochs=2, batch_size=16, lr=1e-2, standardize=True, augment="eq",
                                         time_mask=2, freq_mask=3))
    result = train_run(config, data, device="cpu")
    assert result.status == "finished"
    assert set(result.metrics) - set(TRUST_KEYS) == {"validation", "validation_shift", "validation_source", "test"}
    assert all("val_shift_accuracy" in r and "val_source_accuracy" in r for r in result.history)
    assert result.predictions["validation_source"]["ids"] == data["validation_source"].ids
    assert result.predictions["validation_shift"]["ids"] == data["validation_shift"].ids
    again = train_run(config, data, device="cpu")
    assert again.metrics == result.metrics  # views and masks drawn from the run's seed
    plain = train_run(config, {k: v for k, v in data.items() if k != AUGMENTED}, device="cpu")
    assert plain.step_losses != result.step_losses  # the views were really read


def test_train_run_refuses_views_of_the_wrong_shape():
    data = _synthetic()
    data[AUGMENTED] = FeatureSet(x=data["training"].x[None, :5], y=data["training"].y, ids=data["training"].ids)
    config = RunConfig(features=FeatureConfig(frames=6), model=ModelConfig(arch="sequence", hidden_size=4),
                       train=TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="augmented views"):
        train_run(config, data, device="cpu")


def test_new_options_round_trip_through_json():
    config = RunConfig(features=FeatureConfig(representation="logmel", clip_norm=True),
                             model=ModelConfig(arch="sequence", pooling="stats"),
                             train=TrainConfig(augment="speed,eq", augment_views=2, augment_seed=5, time_mask=7))
    back = RunConfig.from_json(config.to_json())
    assert back == config and back.digest() == config.digest() and back.train.augment == "eq,speed"


# --------------------------------------------------------------------------- the ablation


def test_robustness_rows_flip_one_option_each_and_repeat_over_seeds():
    rows = robustness_ablation(RECOMMENDED.with_values(data="demo:tiny"), **{"train.epochs": 3})
    assert [name for name, _ in rows][0] == "recommended" and len(rows) == 1 + len(ROBUSTNESS_OPTIONS)
    base = rows[0][1]
    for (name, config), option in zip(rows[1:], ROBUSTNESS_OPTIONS):
        assert name.endswith(option)
        changed = {k for k, v in config.flat().items() if base.flat()[k] != v}
        assert changed and changed <= set(ROBUSTNESS_OPTIONS[option][0])
        assert config.train.epochs == ROBUSTNESS_OPTIONS[option][0].get("train.epochs", 3)  # a row's own epochs win
    flipped = robustness_ablation(base.with_values(**{"features.clip_norm": True}))
    assert ("- per-clip CMVN" in [n for n, _ in flipped])  # an option the base has is turned off
    seeded = plan_ablation("robustness", RECOMMENDED.with_values(data="demo:tiny"), seeds=(0, 1, 2),
                           values={"train.epochs": 3})  # rows outer, seeds inner
    assert [(run.row, run.seed) for run in seeded][:4] == [("recommended", 0), ("recommended", 1), ("recommended", 2),
                                                           (rows[1][0], 0)]
    assert [run.config for run in seeded[:6]] == [config.with_values(**{"train.seed": seed})
                                                  for _, config in rows[:2] for seed in (0, 1, 2)]


class _Run:
    def __init__(self, rid, seed, val, shift, test, status="finished"):
        self.id, self.status = rid, status
        self.config = RunConfig(train=TrainConfig(seed=seed))
        self.metrics = {"validation": {"accuracy": val}, "validation_shift": {"accuracy": shift},
                        "test": {"accuracy": test, "balanced_accuracy": test}}


def test_summary_means_and_spreads_match_numpy_and_skip_unfinished_runs():
    runs = [_Run("a", 0, 0.9, 0.5, 0.4), _Run("b", 1, 0.8, 0.6, 0.5), _Run("c", 2, 0.7, 0.4, 0.6),
            _Run("d", 3, 0.1, 0.1, 0.1, status="failed")]
    [row] = summarize_rows([("base", runs)])
    assert row["finished"] == 3 and row["seeds"] == [0, 1, 2] and row["runs"] == ["a", "b", "c", "d"]
    assert row["val_accuracy_mean"] == pytest.approx(0.8)
    assert row["val_accuracy_std"] == pytest.approx(np.std([0.9, 0.8, 0.7], ddof=1))
    assert row["gap_mean"] == pytest.approx(0.8 - 0.5)
    assert mean_std([0.5]) == (0.5, None) and mean_std([]) == (None, None)


def test_ablate_robustness_cli_prints_one_table_with_cross_validation(tiny_dataset, medley_cache, monkeypatch,
                                                                     capsys):
    from engine import cli
    from engine.learn import presets

    monkeypatch.setitem(presets.ABLATIONS, "robustness", lambda base: robustness_ablation(base)[:2])
    code = cli.main(["ablate", "--preset", "robustness", "--data", str(tiny_dataset), "--epochs", "1",
                     "--hidden", "4", "--seeds", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["preset"] == "robustness" and out["seeds"] == [0, 1]
    expected = [name for name, _ in robustness_ablation(RECOMMENDED)[:2]]  # "recommended", "+/- per-clip CMVN"
    assert [row["row"] for row in out["rows"]] == expected
    for row in out["rows"]:
        assert row["finished"] == 2 and row["seeds"] == [0, 1]
        for column in ("val_accuracy", "val_shift_accuracy", "val_source_accuracy", "test_accuracy"):
            assert 0.0 <= row[f"{column}_mean"] <= 1.0 and row[f"{column}_std"] is not None
    assert out["protocol_choice"] in expected and out["protocol"]["split"] == "validation_source"
    assert "cross-val program not available for this dataset" in out["protocol"]["note"]  # the fallback, said
    assert [t["row"] for t in out["protocol"]["tests"]] == expected[1:] and "p_adjusted" in out["protocol"]["tests"][0]
    runs = json.loads((cli.main(["runs", "--json"]), capsys.readouterr().out)[1])
    assert len(runs) == 4 and all(r["val_shift_accuracy"] is not None and r["val_source_accuracy"] is not None
                                  and r["val_program_accuracy"] is None for r in runs)
    cli.main(["runs"])
    lines = capsys.readouterr().out.splitlines()
    assert all("program    n/a" in line for line in lines[:4])
    assert lines[-1].startswith("program n/a: cross-val program not available for this dataset")


def test_training_and_prediction_features_agree_with_cmvn_and_log_mel(tiny):
    from engine.features.extract import decode_clip

    for config in (FeatureConfig(frames=None, clip_norm=True), FeatureConfig(frames=20, representation="logmel",
                                                                              clip_norm=True)):
        loaded = load_features(tiny, config)["test"]
        clip = tiny.subset("test")[0]
        assert loaded.ids[0] == clip.uuid
        np.testing.assert_allclose(loaded.x[0], clip_features(decode_clip(clip.path, config), config), atol=1e-4)
        assert np.abs(loaded.x[0].mean(axis=0)).max() < 1e-4  # CMVN applied on the training path too


def test_format_rows_prints_mean_and_seed_spread_per_row():
    from engine.compare.ablation import format_rows

    table = summarize_rows([("recommended", [_Run("a", 0, 0.9, 0.5, 0.4), _Run("b", 1, 0.8, 0.6, 0.5)]),
                            ("+ x", [_Run("c", 0, 0.7, 0.4, 0.6)]), ("+ y", [])])
    lines = format_rows(table).splitlines()
    assert "cross-val" in lines[0] and len(lines) == 4
    assert "85.0 +-  7.1" in lines[1] and "55.0 +-  7.1" in lines[1] and lines[1].rstrip().endswith("40.0")
    assert "70.0" in lines[2] and "+-" not in lines[2]  # one seed: no spread
    assert lines[3].split()[-1] == "-"  # no finished run


# --------------------------------------------------------------------------- the protocol's choice


class _Stored:
    """A finished run record as the protocol reads it: id, status, group key, metrics."""

    def __init__(self, rid: str, key: str, status: str = "finished", metrics: dict | None = None):
        self.id, self.group_key, self.status, self.metrics = rid, key, status, metrics


def _protocol_rows(accuracies: dict[str, list[float]], *, n: int = 300, seed: int = 0,
                   keys: dict[str, str] | None = None) -> tuple[list, dict[str, dict]]:
    """Rows of stored runs whose cross-collection (source) predictions are right with the given
    per-seed accuracies on the same n clips; no run has test predictions at all."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, n)
    ids = [f"clip{i}" for i in range(n)]
    rows, predictions = [], {}
    for name, per_seed in accuracies.items():
        records = []
        for k, accuracy in enumerate(per_seed):
            rid = f"{name}-{k}"
            right = rng.random(n) < accuracy
            predicted = np.where(right, labels, (labels + 1) % 8)
            predictions[rid] = {"validation_source": {"ids": ids, "y": labels.tolist(),
                                                      "probs": np.eye(8)[predicted].tolist()}}
            records.append(_Stored(rid, (keys or {}).get(name, name)))
        rows.append((name, records))
    return rows, predictions


def _choose(rows, predictions, **kwargs):
    return select_by_cross_validation(rows, lambda r: predictions[r.id], **kwargs)


def test_protocol_chooses_a_row_only_when_significantly_better_on_cross_validation_after_holm():
    from engine.compare.stats import holm

    rows, preds = _protocol_rows({"recommended": [0.50, 0.52, 0.51], "+ x": [0.70, 0.72, 0.71],
                                  "+ y": [0.55, 0.50, 0.53], "+ z": [0.30, 0.31, 0.29]})
    selection = _choose(rows, preds)  # no run has test predictions: the choice never reads test
    assert selection["choice"] == "+ x" and selection["split"] == "validation_source"
    tests = {t["row"]: t for t in selection["tests"]}
    assert set(tests) == {"+ x", "+ y", "+ z"}
    np.testing.assert_allclose([tests[r]["p_adjusted"] for r in ("+ x", "+ y", "+ z")],
                               holm([tests[r]["p_value"] for r in ("+ x", "+ y", "+ z")]))
    assert tests["+ z"]["significant"] and tests["+ z"]["difference"] < 0  # significantly worse: never chosen
    assert not tests["+ y"]["significant"]
    # a gain inside the seed spread keeps the recommendation
    noisy, preds = _protocol_rows({"recommended": [0.50, 0.60, 0.55], "+ x": [0.53, 0.63, 0.56]})
    assert _choose(noisy, preds)["choice"] == "recommended"


def test_protocol_never_chooses_the_same_configuration_or_a_single_run_pair():
    rows, preds = _protocol_rows({"recommended": [0.50, 0.51, 0.50], "same again": [0.80, 0.81, 0.80]},
                                 keys={"same again": "recommended"})
    selection = _choose(rows, preds)
    assert selection["choice"] == "recommended"
    assert selection["tests"][0]["same_configuration"] and not selection["tests"][0]["significant"]
    single, preds = _protocol_rows({"recommended": [0.50], "+ x": [0.95]})
    selection = _choose(single, preds)
    assert selection["choice"] == "recommended" and "seed repeats" in selection["tests"][0]["error"]


def test_protocol_refuses_to_choose_on_test():
    rows, preds = _protocol_rows({"recommended": [0.5, 0.5], "+ x": [0.6, 0.6]})
    for split in ("test", "training"):
        with pytest.raises(ConfigError, match="never on"):
            _choose(rows, preds, split=split)


def test_protocol_false_choice_rate_stays_at_alpha_when_no_row_is_better():
    """Simulation: five rows whose configurations differ but whose true cross-val accuracy
    equals the base's (seed effects of 3 points, 200 clips); the protocol must replace the
    base in at most alpha of the repetitions (plus simulation error)."""
    repetitions, replaced = 200, 0
    rng = np.random.default_rng(1)
    for rep in range(repetitions):
        accuracies = {name: list(np.clip(0.6 + rng.normal(0, 0.03, 3), 0, 1))
                      for name in ("recommended", "+ a", "+ b", "+ c", "+ d", "+ e")}
        rows, preds = _protocol_rows(accuracies, n=200, seed=rep)
        replaced += _choose(rows, preds)["choice"] != "recommended"
    assert replaced / repetitions <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / repetitions)


def test_format_choice_names_each_row_its_holm_p_and_the_choice():
    from engine.compare.ablation import format_choice

    rows, preds = _protocol_rows({"recommended": [0.50, 0.52, 0.51], "+ x": [0.70, 0.72, 0.71], "+ y": [0.55]})
    rows.append(("+ lone", []))
    text = format_choice(_choose(rows, preds))
    assert "+ x" in text and "Holm p" in text and "significantly better" in text
    assert text.splitlines()[-1] == "protocol choice: + x"
    assert "+ lone" not in text  # a row without finished runs is not compared


@pytest.mark.parametrize("sr", [22050, 20000])  # 20 kHz is no MP3 rate: resampled around the codec
def test_mp3_roundtrip_is_aligned_same_length_and_lossy(sr):
    """libsndfile's MP3 (LAME + mpg123) in the held-out chain: the output lines up with the
    input sample for sample (gapless), keeps its length, and loses detail at low VBR quality."""
    from engine.data.augment import mp3_roundtrip

    y = (np.random.default_rng(0).standard_normal(sr * 2) * 0.1).astype(np.float32)
    out = mp3_roundtrip(y, sr, 9.0)
    assert out.shape == y.shape and out.dtype == np.float32
    lags = {lag: float(np.dot(out[100 + lag: -100 + lag], y[100:-100])) for lag in range(-3, 4)}
    assert max(lags, key=lags.get) == 0
    assert 0.3 < np.corrcoef(out, y)[0, 1] < 0.99
    assert np.array_equal(out, mp3_roundtrip(y, sr, 9.0))


# --------------------------------------------------------------------------- the program view


def _add_program_view(root, n_per_class: int = 1, extra_rows: str = ""):
    """Give a synthetic dataset a program view: copies of validation clips under new uuids
    (subset validation_program, in the view's own CSV, as the demo writes it). Returns the uuids."""
    import shutil
    import uuid as uuidlib

    from engine.data.dataset import PROGRAM_VIEW, PROGRAM_VIEW_CSV
    from engine.core.labels import CLASS_NAMES

    source = load_dataset(root, check_audio=False)
    lines, uuids = ["subset,instrument,instrument_id,song_id,uuid4"], []
    for label in (1, 3, 4):
        for k, clip in enumerate([c for c in source.subset("validation") if c.label == label][:n_per_class]):
            uid = str(uuidlib.UUID(int=1000 + 10 * label + k, version=4))
            shutil.copy(clip.path, clip.path.with_name(f"Medley-solos-DB_{PROGRAM_VIEW}-{label}_{uid}.wav"))
            lines.append(f"{PROGRAM_VIEW},{CLASS_NAMES[label]},{label},{900 + label},{uid}")
            uuids.append(uid)
    (root / "annotation" / PROGRAM_VIEW_CSV).write_text("\n".join(lines) + "\n" + extra_rows)
    return uuids


def test_program_view_is_read_cached_apart_and_absent_on_a_dataset_without_one(tiny_dataset, medley_cache,
                                                                                monkeypatch):
    config = FeatureConfig(frames=None)
    plain = load_dataset(tiny_dataset)
    assert plain.program_view == [] and load_program_validation(plain, config) is None
    test_uuid = plain.subset("test")[0].uuid
    uuids = _add_program_view(tiny_dataset, extra_rows=f"test,clarinet,0,1,{test_uuid}\n")
    ds = load_dataset(tiny_dataset)
    assert [c.uuid for c in ds.program_view] == uuids  # the smuggled test row is refused ...
    assert any("unknown subset 'test'; expected validation_program" in p.reason for p in ds.problems)  # ... and said
    assert ds.fingerprint() != plain.fingerprint()  # the view's CSV is part of the cache key
    seen: list[str] = []
    extract = features._extract

    def spy(paths, target, backend, device, report, ids, variant=features.CLEAN):
        seen.extend(ids)
        return extract(paths, target, backend, device, report, ids, variant)

    monkeypatch.setattr(features, "_extract", spy)
    view = load_program_validation(ds, config)
    assert seen == uuids and view.ids == uuids and list(view.y) == [1, 3, 4]
    path = cache_path(ds, config, "validation_program")
    assert path.exists() and path != cache_path(ds, config, "validation")
    seen.clear()
    again = load_program_validation(ds, config)
    assert seen == [] and np.array_equal(again.x, view.x)


def test_protocol_chooses_on_the_program_view_when_every_run_has_it_and_says_when_it_falls_back():
    from engine.compare.ablation import format_choice

    rows, preds = _protocol_rows({"recommended": [0.50, 0.52, 0.51], "+ x": [0.70, 0.72, 0.71]})
    for records in (r for _, r in rows):
        for record in records:
            preds[record.id] = {"validation_program": preds[record.id]["validation_source"]}
            record.metrics = {"validation_program": {"accuracy": 0.5}}
    assert protocol_split(rows) == ("validation_program", None)
    selection = _choose(rows, preds)  # reads only validation_program: the predictions hold nothing else
    assert selection["split"] == "validation_program" and selection["note"] is None and selection["choice"] == "+ x"
    assert "note:" not in format_choice(selection)
    rows[1][1][0].metrics = {}  # one run without the view: fall back, and say why
    split, note = protocol_split(rows)
    assert split == "validation_source" and "not every run has it" in note
    plain, _ = _protocol_rows({"recommended": [0.5, 0.5], "+ x": [0.6, 0.6]})
    split, note = protocol_split(plain)
    assert split == "validation_source" and "not available for this dataset" in note
    text = format_choice(_choose(*_protocol_rows({"recommended": [0.5, 0.52], "+ x": [0.6, 0.61]})))
    assert text.splitlines()[0].startswith("note: cross-val program not available")


# --------------------------------------------------------------------------- PCEN and mixup


def test_pcen_features_match_librosa_in_both_backends_and_shrug_off_a_gain_change():
    import librosa

    y = _tone(3.0) * np.exp(-np.linspace(0, 3, 3 * SR)).astype(np.float32)
    y = y + 0.01 * np.random.default_rng(1).standard_normal(3 * SR).astype(np.float32)
    config = FeatureConfig(frames=None, representation="pcen")
    assert config.feature_dim == 128 and config.is_mel_bands
    fitted = y[: config.clip_samples]
    mel = librosa.feature.melspectrogram(y=fitted, sr=SR, n_fft=2048, hop_length=512)
    reference = librosa.pcen(mel * 2.0**31, sr=SR, hop_length=512).T  # librosa's defaults, its documented scaling
    for backend in ("librosa", "torch"):
        ours = clip_features(y, config, backend=backend)
        assert ours.shape == reference.shape == (config.total_frames, 128)
        np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-4)
    # A 20 dB quieter copy: the dB bands move by 20 dB, PCEN's (range ~4) by a small fraction of that.
    quieter = clip_features(0.1 * y, config)
    assert np.abs(quieter - clip_features(y, config)).mean() < 0.1 * np.abs(clip_features(y, config)).std()
    logmel = FeatureConfig(frames=None, representation="logmel")
    np.testing.assert_allclose(clip_features(0.1 * y, logmel) - clip_features(y, logmel), -20.0, atol=0.5)


def test_pcen_of_no_clips_keeps_the_empty_shape():
    from engine.features.pcen import pcen_mel

    assert pcen_mel(np.zeros((0, 128, 129), np.float32), SR, 512).shape == (0, 128, 129)


def test_mixup_draws_are_seeded_and_a_mixup_run_trains_reproducibly_and_alone():
    from engine.learn.batched import group_key
    from engine.learn.train import mixup_partners

    partner, lam = mixup_partners(16, 0.2, torch.Generator().manual_seed(3))
    again = mixup_partners(16, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(partner, again[0]) and lam == again[1] and 0.0 <= lam <= 1.0
    assert sorted(partner.tolist()) == list(range(16))
    lams = [mixup_partners(4, 0.2, torch.Generator().manual_seed(s))[1] for s in range(400)]
    assert abs(np.mean(lams) - 0.5) < 0.05  # Beta(a, a) is symmetric about 1/2
    assert np.mean([min(v, 1 - v) < 0.1 for v in lams]) > 0.5  # and, for a = 0.2, mostly near 0 or 1

    data = _synthetic()
    config = RunConfig(features=FeatureConfig(frames=6), model=ModelConfig(arch="sequence", hidden_size=8),
                       train=TrainConfig(epochs=2, batch_size=16, lr=1e-2, standardize=True, mixup=0.4))
    result = train_run(config, data, device="cpu")
    assert result.status == "finished"
    assert train_run(config, data, device="cpu").metrics == result.metrics
    plain = train_run(config.with_values(**{"train.mixup": 0.0}), data, device="cpu")
    assert plain.step_losses != result.step_losses
    assert group_key(RunConfig(train=TrainConfig(mixup=0.2))) is None and group_key(RunConfig()) is not None
    with pytest.raises(ConfigError, match="mixup"):
        TrainConfig(mixup=-0.1)
    from engine.core.config import canonical_dict

    assert "mixup" not in canonical_dict(RunConfig())["train"]  # the default leaves old digests alone
    assert RunConfig.from_json(config.to_json()) == config


def test_a_linear_run_trains_stores_its_check_and_learns_clip_means():
    data = _synthetic(n=96)
    config = RunConfig(features=FeatureConfig(frames=6), model=ModelConfig(arch="linear", dropout=0.0),
                       train=TrainConfig(epochs=40, batch_size=32, lr=3e-2, standardize=True))
    result = train_run(config, data, device="cpu")
    assert result.status == "finished"
    assert result.metrics["validation"]["accuracy"] > 0.5  # chance is 1/8; the class shifts every feature's mean
    assert result.ood_reference["embeddings"].shape == (96, 2 * 21)  # the head's input: clip statistics


# --------------------------------------------------------------------------- outlier exposure


def test_outlier_exposure_makes_the_model_unsure_of_outliers_and_needs_them():
    from engine.learn.train import OUTLIERS

    data = _synthetic(n=96)
    rng = np.random.default_rng(7)
    far = lambda n: (rng.normal(size=(n, 6, 21)) * 0.3 - 3.0).astype(np.float32)  # noqa: E731  one region, away from every class
    data[OUTLIERS] = FeatureSet(x=far(96), y=np.full(96, -1), ids=[f"o{i}" for i in range(96)])
    config = RunConfig(features=FeatureConfig(frames=6), model=ModelConfig(arch="sequence", hidden_size=16),
                       train=TrainConfig(epochs=15, batch_size=32, lr=1e-2, outlier_exposure=0.5))
    exposed = train_run(config, data, device="cpu")
    plain = train_run(config.with_values(**{"train.outlier_exposure": 0.0}), data, device="cpu")
    assert exposed.status == plain.status == "finished"

    def top_probability(result, x):
        model = build_model(config.model, config.features).eval()
        model.load_state_dict(result.state_dict)
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(x)), dim=1).max(dim=1).values.mean().item()

    unseen = far(64)
    assert top_probability(exposed, unseen) < 0.3 < top_probability(plain, unseen)  # uniform is 1/8
    assert exposed.metrics["validation"]["accuracy"] > 0.5  # still learns the classes
    with pytest.raises(ConfigError, match="outlier clips"):
        train_run(config, {k: v for k, v in data.items() if k != OUTLIERS}, device="cpu")


def test_outlier_features_are_rendered_once_cached_and_cut_like_a_split(medley_cache, monkeypatch):
    from engine.data import probes
    from engine.features import outliers
    from engine.runs.worker import prep_plan

    config = FeatureConfig(frames=20, clip_norm=True)
    first = outliers.load_outlier_features(config, "demo:tiny", per_program=1)
    n = len(probes.EXPOSURE_INSTRUMENTS)
    assert first.x.shape == (n, 20, config.feature_dim) and (first.y == -1).all() and len(set(first.ids)) == n
    np.testing.assert_allclose(first.x.mean(axis=1), 0.0, atol=1e-4)  # CMVN applied after loading

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(outliers, "other_instrument_clips", no_render)
    whole = outliers.load_outlier_features(FeatureConfig(frames=None), "demo:tiny", per_program=1)
    assert whole.x.shape == (n, 129, config.feature_dim)
    np.testing.assert_allclose(normalize_clips(whole.x[:, :20]), first.x, atol=1e-5)
    exposed = RunConfig(train=TrainConfig(outlier_exposure=0.5))
    assert "outlier clips" in prep_plan(exposed) and "outlier clips" not in prep_plan(RunConfig())
