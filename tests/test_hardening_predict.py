"""Hardening of prediction (issue 13, cases 11-12): long recordings are refused from their
header and plotted in bounded memory; the CLI never answers confidently on unusable audio."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.data.audio import load_audio
from engine.core.errors import AudioError

ROOT = Path(__file__).resolve().parent.parent


def _encoded(seconds: float, sr: int = 8000, fmt: str = "MP3") -> bytes:
    y = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * sr))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format=fmt)
    return buffer.getvalue()


# ---- 11. long recordings -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["MP3", "WAV", "FLAC"])
def test_too_long_recording_is_refused_from_its_header_before_decoding(monkeypatch, fmt):
    monkeypatch.setenv("MEDLEY_MAX_AUDIO_MINUTES", "0.5")  # 30 s
    data = _encoded(45, fmt=fmt)
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"lasts 0\.8 minutes; the limit is 0\.5 minutes"):
            load_audio(data, name="long." + fmt.lower())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # nothing decoded: 45 s at 22,050 Hz alone would be 4 MB
    assert len(load_audio(_encoded(20, fmt=fmt))) == pytest.approx(20 * 22050, rel=0.01)  # under the limit: fine


def test_default_limit_is_twenty_minutes_and_can_be_lifted(monkeypatch):
    from engine.data.audio import max_audio_seconds

    monkeypatch.delenv("MEDLEY_MAX_AUDIO_MINUTES", raising=False)
    assert max_audio_seconds() == 20 * 60
    monkeypatch.setenv("MEDLEY_MAX_AUDIO_MINUTES", "0.1")
    with pytest.raises(AudioError, match="limit"):
        load_audio(_encoded(10, fmt="WAV"))
    assert len(load_audio(_encoded(10, fmt="WAV"), max_seconds=float("inf"))) > 0
    monkeypatch.setenv("MEDLEY_MAX_AUDIO_MINUTES", "lots")
    with pytest.raises(AudioError, match="MEDLEY_MAX_AUDIO_MINUTES"):
        max_audio_seconds()


def test_long_spectrogram_is_computed_in_bounded_memory_and_matches_the_direct_one():
    import librosa

    from ui import charts

    y = (0.1 * np.random.default_rng(1).standard_normal(22050 * 240)).astype(np.float32)  # 4 minutes
    charts.mel_db(y[:22050 * 60], 22050, n_mels=64, max_frames=500)  # one-time caches (mel basis, FFT plans)
    peaks = []
    for recording in (y, np.tile(y, 4)):  # 4 and 16 minutes
        tracemalloc.start()
        try:
            pooled = charts.mel_db(recording, 22050, n_mels=64, max_frames=500)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        step = charts.mel_step(len(recording), 512, 500)
        assert pooled.shape == (64, -(-(1 + len(recording) // 512) // step)) and pooled.shape[1] <= 500
    # librosa directly: 127 MB for the 4 minutes, ~0.5 GB for 16; here the same ~15 MB for both
    assert max(peaks) < 30_000_000, peaks
    direct = librosa.feature.melspectrogram(y=y[: 22050 * 30], sr=22050, n_fft=2048, hop_length=512, n_mels=64)
    whole = charts.mel_db(y[: 22050 * 30], 22050, n_mels=64)
    chunked_every_frame = charts.mel_db(y[: 22050 * 30], 22050, n_mels=64, max_frames=10**9)
    np.testing.assert_allclose(whole, librosa.power_to_db(direct, ref=direct.max()), atol=1e-4)
    old, charts.MEL_CHUNK_FRAMES = charts.MEL_CHUNK_FRAMES, 100
    try:
        np.testing.assert_allclose(charts.mel_db(y[: 22050 * 30], 22050, n_mels=64), whole, atol=1e-3)
    finally:
        charts.MEL_CHUNK_FRAMES = old
    np.testing.assert_allclose(chunked_every_frame, whole, atol=1e-4)


# ---- 12. the CLI on unusable audio -------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory) -> tuple[Path, str]:
    """A cache holding one tiny finished run (trained through the CLI on the synthetic dataset)."""
    from conftest import write_tiny_dataset

    base = tmp_path_factory.mktemp("predict_cli")
    data = write_tiny_dataset(base / "data", per_class=2)
    cache = base / "cache"
    done = _engine("train", "--data", str(data), "--hidden", "8", "--epochs", "1", "--batch-size", "8", "--json",
                   cache=cache)
    assert done.returncode == 0, done.stderr
    return cache, json.loads(done.stdout)["run_id"]


def _engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _wav(path: Path, y: np.ndarray, sr: int = 22050) -> Path:
    sf.write(path, np.asarray(y, dtype=np.float32), sr, subtype="FLOAT")
    return path


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_cli_predict_refuses_unusable_audio_and_reports_warnings(trained_cache, tmp_path):
    cache, run_id = trained_cache
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(22050 * 3) / 22050)
    files = {
        "silent.wav": _wav(tmp_path / "silent.wav", np.zeros(22050 * 3)),
        "tiny.wav": _wav(tmp_path / "tiny.wav", tone[:220]),  # 0.01 s
        "short.wav": _wav(tmp_path / "short.wav", tone[:2205]),  # 0.1 s
        "huge.wav": _wav(tmp_path / "huge.wav", 1e30 * rng.standard_normal(22050 * 3)),
        "half.wav": _wav(tmp_path / "half.wav", tone[:22050]),  # 1 s: classified, with a warning
        "good.wav": _wav(tmp_path / "good.wav", tone),
    }
    done = _engine("predict", "--run", run_id, *map(str, files.values()), "--json", cache=cache)
    assert done.returncode == 1  # some files could not be classified
    results = {Path(r["file"]).name: r for r in _strict(done.stdout)}
    for name in ("silent.wav", "tiny.wav", "short.wav", "huge.wav"):
        assert "label" not in results[name] and results[name]["error"], results[name]
        assert f"{name}" in done.stderr
    assert "silent" in results["silent.wav"]["error"]
    assert "at least 0.25 s" in results["tiny.wav"]["error"]
    assert "full scale" in results["huge.wav"]["error"]
    assert results["half.wav"]["label"] and any("padded" in w for w in results["half.wav"]["warnings"])
    assert "warning: " in done.stderr and "half.wav" in done.stderr
    assert results["good.wav"]["warnings"] == []
    probabilities = results["good.wav"]["probabilities"]
    assert all(np.isfinite(v) for v in probabilities.values()) and abs(sum(probabilities.values()) - 1) < 1e-4


def test_cli_json_never_contains_nan():
    from engine.cli import json_text

    text = json_text({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}, "e": 2})
    assert _strict(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2}
