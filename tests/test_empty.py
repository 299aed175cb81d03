"""Empty is a size (issue #31): arrays with 0 clips or 0 frames round-trip through the feature
cache, and every later stage says "no clips" in words (an error message or an explicit empty
result) instead of crashing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.features import extract as F
from engine.core.config import RunConfig
from engine.data.dataset import load_dataset
from engine.core.errors import AudioError, ConfigError
from engine.features.extract import FeatureConfig, FeatureSet, fit_standardizer, load_features, normalize_clips
from engine.learn.metrics import NUM_CLASSES, confusion_matrix, evaluate
from engine.learn.model import build_model
from engine.predict.predictor import Predictor
from engine.learn.train import train_run
from tests.conftest import CSV_NAME
from ui import charts

EMPTY_SHAPES = [
    (0, 129, 21),     # a split with no clips, whole clip
    (0, 3, 21),       # no clips, the study's 3 frames
    (4, 0, 21),       # clips without frames
    (0, 0, 21),       # neither
    (0, 4, 129, 21),  # augmented views of an empty training split
    (3, 0, 129, 21),  # no augmented views
]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_every_empty_shape_round_trips_through_the_cache(tmp_path, shape, dtype):
    path = tmp_path / "split.npy"
    x = np.zeros(shape, dtype=dtype)
    F._write_cache(path, x)
    back = F._read_cache(path, shape, dtype)
    assert back is not None, "an empty cache entry was not read back"
    assert back.shape == shape and back.dtype == dtype
    assert F._checksum(back) == F._checksum(x)


def test_empty_and_non_empty_arrays_get_their_own_checksums():
    full = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert F._checksum(np.zeros((0, 2, 3), np.float32))["sha256"] != F._checksum(full)["sha256"]
    assert F._checksum(np.zeros((0, 2, 3), np.float32))["shape"] == [0, 2, 3]


def test_a_split_without_clips_is_cached_and_read_back(make_tiny_dataset, medley_cache, monkeypatch):
    root = make_tiny_dataset(per_class=1, classes=(0, 3))
    csv = root / "annotation" / CSV_NAME
    csv.write_text("".join(line for line in csv.read_text().splitlines(keepends=True) if not line.startswith("test,")))
    ds = load_dataset(root)
    first = load_features(ds, FeatureConfig())
    assert first["test"].x.shape == (0, 3, 21) and first["test"].ids == []
    calls: list[int] = []
    monkeypatch.setattr(F, "_extract", lambda files, *a, **k: calls.append(len(files)))
    again = load_features(ds, FeatureConfig())
    assert calls == [], "the cached splits (the empty one included) were extracted again"
    assert again["test"].x.shape == (0, 3, 21)
    np.testing.assert_array_equal(again["training"].x, first["training"].x)


@pytest.mark.parametrize("shape", [(0, 3, 21), (4, 0, 21)])
def test_a_standardizer_fitted_on_no_clips_says_so(shape):
    with pytest.raises(ConfigError, match="no clips"):
        fit_standardizer(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(0, 3, 21), (4, 0, 21)])
def test_per_clip_normalisation_of_nothing_is_nothing(shape):
    out = normalize_clips(np.zeros(shape, np.float32))
    assert out.shape == shape and out.dtype == np.float32


def test_training_on_an_empty_split_says_no_clips():
    empty = FeatureSet(x=np.zeros((0, 3, 21), np.float32), y=np.zeros(0, np.int64), ids=[])
    with pytest.raises(ConfigError, match="no clips"):
        train_run(RunConfig(), {"training": empty, "validation": empty, "test": empty}, device="cpu")


def test_metrics_of_an_empty_view_are_an_explicit_empty_result():
    result = evaluate(np.zeros(0, np.int64), np.zeros((0, NUM_CLASSES), np.float32))
    assert result["n"] == 0
    assert result["accuracy"] is None and result["balanced_accuracy"] is None and result["macro_f1"] is None
    assert result["per_class_accuracy"] == [None] * NUM_CLASSES
    assert np.asarray(result["confusion"]).shape == (NUM_CLASSES, NUM_CLASSES)
    assert not np.asarray(result["confusion"]).any()
    assert confusion_matrix(np.zeros(0), np.zeros(0)).sum() == 0


def test_the_confusion_heatmap_of_an_empty_view_says_no_clips():
    spec = charts.confusion_heatmap(np.zeros((NUM_CLASSES, NUM_CLASSES)), title="test").to_dict()
    assert spec["title"] == f"test ({charts.NO_CLIPS})"
    assert charts.confusion_heatmap(np.ones((NUM_CLASSES, NUM_CLASSES)), title="test").to_dict()["title"] == "test"


@pytest.mark.parametrize("counts", [{}, {"training": {}}, {"training": {}, "test": {}}])
def test_class_counts_of_an_empty_split_say_no_clips(counts):
    assert charts.class_count_chart(counts).to_dict()["title"] == charts.NO_CLIPS


def test_per_class_bars_without_values_say_no_clips():
    df = pd.DataFrame({"class": ["piano"], "run": ["a"], "accuracy": [None]})
    assert charts.per_class_bars(df).to_dict()["title"] == charts.NO_CLIPS


def _predictor() -> Predictor:
    config = RunConfig()
    model = build_model(config.model, config.features)
    return Predictor(config, model.state_dict())


def test_prediction_on_zero_windows_is_an_empty_result():
    probs = _predictor().predict_features(np.zeros((0, 3, 21), np.float32))
    assert probs.shape == (0, NUM_CLASSES) and probs.dtype == np.float32


def test_a_recording_with_no_window_says_no_clips(monkeypatch):
    predictor = _predictor()
    monkeypatch.setattr(predictor, "window_features", lambda y: (np.zeros((0, 3, 21), np.float32), []))
    with pytest.raises(AudioError, match="no clips"):
        predictor.predict_samples(np.random.default_rng(0).standard_normal(22050 * 3).astype(np.float32) * 0.1)


def _store_with_an_empty_test_view(tmp_path):
    """A store holding one finished run whose validation has 8 clips and whose test has none."""
    from types import SimpleNamespace

    from engine.runs.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    run_id = store.create_run(RunConfig(), name="empty test")
    y = np.arange(8)
    metrics = {"validation": evaluate(y, np.eye(8, dtype=np.float32)), "test": evaluate(np.zeros(0), np.zeros((0, 8)))}
    store.save_result(run_id, SimpleNamespace(
        status="finished", error=None, device="cpu", state_dict={}, standardizer=None, best_epoch=1,
        history=[{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 1.0, "seconds": 1.0}],
        step_losses=[1.0], predictions={}, metrics=metrics))
    return store, run_id


def test_the_cli_prints_no_clips_for_an_empty_view(tmp_path, capsys):
    from engine.cli import _print_run

    store, run_id = _store_with_an_empty_test_view(tmp_path)
    _print_run(store.get(run_id))
    out = capsys.readouterr().out
    assert "validation" in out and "accuracy 100.0%" in out
    assert "no clips (n=0)" in out


def test_the_generalisation_gap_of_an_empty_test_split_says_no_clips():
    from engine.compare.stats import ComparisonError, generalisation_gap

    metrics = {"validation": evaluate(np.arange(8), np.eye(8)), "test": evaluate(np.zeros(0), np.zeros((0, 8)))}
    with pytest.raises(ComparisonError, match="no clips"):
        generalisation_gap(metrics)
