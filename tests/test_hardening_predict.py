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

from engine.audio import load_audio
from engine.errors import AudioError

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
    from engine.audio import max_audio_seconds

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
