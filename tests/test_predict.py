"""Predictor: a stored run reproduces its training-end probabilities and classifies files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402

from engine.core.errors import StoreError  # noqa: E402
from engine.core.labels import CLASS_NAMES  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402
from engine.learn.train import train_run  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str, dict, object]:
    """A run trained on synthetic features (with a standardizer) and saved in a fresh store."""
    folder = tmp_path_factory.mktemp("predict")
    store = RunStore(folder / "runs.sqlite", folder / "runs")
    config = tiny_config(epochs=3, **{"train.standardize": True})
    data = synthetic_data(config)
    result = train_run(config, data, device="cpu")
    run_id = store.create_run(config, status="running")
    store.save_result(run_id, result)
    return store, run_id, data, result


def test_same_probabilities_as_training_end(trained) -> None:
    store, run_id, data, result = trained
    predictor = Predictor.from_store(RunStore(store.db_path, store.runs_dir), run_id)
    assert not predictor.model.training and predictor.mean is not None
    for split in ("validation", "test"):
        probs = predictor.predict_features(data[split].x, calibrated=False)  # calibrated: tests/test_trust.py
        expected = np.asarray(result.predictions[split]["probs"])
        assert probs.shape == (len(data[split].y), 8)
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_predict_files_reports_bad_files_and_goes_on(trained, tmp_path: Path) -> None:
    store, run_id, _, _ = trained
    predictor = Predictor.from_store(store, run_id)
    t = np.arange(int(7 * 22050)) / 22050
    good = tmp_path / "tone.wav"
    sf.write(good, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    results = predictor.predict_files([garbage, good, tmp_path / "missing.wav"])
    assert [r["file"] for r in results] == [str(garbage), str(good), str(tmp_path / "missing.wav")]
    assert "error" in results[0] and "not a readable audio file" in results[0]["error"]
    assert "does not exist" in results[2]["error"]
    assert results[1]["label"] in CLASS_NAMES and sum(results[1]["probabilities"].values()) == pytest.approx(1.0)

    pred = predictor.predict_file(good.read_bytes())
    assert [w.start for w in pred.windows] == pytest.approx([0.0, 65536 / 22050])  # 7 s -> 2 windows, tail dropped
    mean = np.mean([w.probabilities for w in pred.windows], axis=0)
    assert list(pred.probabilities.values()) == pytest.approx(list(mean), abs=1e-6)
    assert pred.label == max(pred.probabilities, key=pred.probabilities.get) and not pred.silent
    assert pred.duration == pytest.approx(7.0, abs=1e-3)


def test_runs_without_model_are_refused(trained) -> None:
    store, _, _, _ = trained
    queued = store.create_run(tiny_config())
    with pytest.raises(StoreError, match="has no saved model"):
        Predictor.from_store(store, queued)
    with pytest.raises(StoreError, match="no run 'nope'"):
        Predictor.from_store(store, "nope")


@pytest.mark.parametrize("fmt,subtype,channels", [("FLAC", "PCM_16", 1), ("OGG", "VORBIS", 2), ("MP3", "MPEG_LAYER_III", 2)])
def test_compressed_uploads_decode_to_the_same_tone(fmt: str, subtype: str, channels: int) -> None:
    """FLAC, Ogg Vorbis and MP3 bytes (what users upload) decode like the WAV they came from."""
    import io

    from engine.data.audio import load_audio

    sr, seconds = 44100, 2.0
    t = np.arange(int(sr * seconds)) / sr
    tone = (0.4 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone] * channels, axis=1), sr, format=fmt, subtype=subtype)
    y = load_audio(buffer.getvalue(), name=f"clip.{fmt.lower()}")
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - seconds * 22050) < 0.1 * 22050  # MP3 adds encoder delay and padding
    spectrum = np.abs(np.fft.rfft(y))
    assert np.fft.rfftfreq(len(y), 1 / 22050)[spectrum.argmax()] == pytest.approx(440.0, abs=2.0)
    assert np.sqrt(np.mean(y[len(y) // 4:-len(y) // 4] ** 2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.1)
