"""Shared fixtures: a tiny synthetic Medley-solos-DB on disk and an isolated cache folder.

`tiny_dataset` writes 3 clips per class per split (72 WAVs, mirdata layout). Each class is a
harmonic tone with its own pitch and timbre plus a little noise, so a model can learn it.
`make_tiny_dataset` is the same writer as a function for other sizes or the flat layout.
`medley_cache` points $MEDLEY_CACHE at an empty temporary folder.
"""

from __future__ import annotations

import functools
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from engine.core.labels import CLASS_NAMES, SUBSETS

CSV_NAME = "Medley-solos-DB_metadata.csv"
CSV_HEADER = "subset,instrument,instrument_id,song_id,uuid4"
NATIVE_SR = 44100
NATIVE_SAMPLES = 131072


def synth_clip(label: int, rng: np.random.Generator, samples: int = NATIVE_SAMPLES, sr: int = NATIVE_SR) -> np.ndarray:
    """A (samples,) float32 tone for class `label`: pitch and harmonic count depend on the class.

    Clips of a class differ by a random gain, start offset and noise (cheap: the tone is shared).
    """
    tone = np.roll(_class_tone(label, samples, sr), int(rng.integers(samples)))
    noise = rng.standard_normal(samples, dtype=np.float32)
    return (rng.uniform(0.5, 1.0) * tone + 0.01 * noise).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _class_tone(label: int, samples: int, sr: int) -> np.ndarray:
    t = np.arange(samples, dtype=np.float32) / sr
    f0 = 110.0 * 2 ** (label / 3)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, label + 2))
    return (0.3 * tone / (label + 1) ** 0.5).astype(np.float32)


def write_tiny_dataset(
    root: Path, *, per_class: int = 3, layout: str = "mirdata", seed: int = 0, classes: tuple[int, ...] = tuple(range(8))
) -> Path:
    """Write `per_class` clips per class and split under `root` in the given layout; returns root."""
    rng = np.random.default_rng(seed)
    audio_dir = root / "audio" if layout == "mirdata" else root
    csv_dir = root / "annotation" if layout == "mirdata" else root
    audio_dir.mkdir(parents=True, exist_ok=True)
    csv_dir.mkdir(parents=True, exist_ok=True)
    lines = [CSV_HEADER]
    for subset in SUBSETS:
        for label in classes:
            for index in range(per_class):
                uuid = str(uuidlib.UUID(bytes=rng.bytes(16), version=4))
                sf.write(audio_dir / f"Medley-solos-DB_{subset}-{label}_{uuid}.wav", synth_clip(label, rng), NATIVE_SR, subtype="FLOAT")
                lines.append(f"{subset},{CLASS_NAMES[label]},{label},{label * 10 + index},{uuid}")
    (csv_dir / CSV_NAME).write_text("\n".join(lines) + "\n")
    return root


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-screenshots", action="store_true", default=False,
                     help="after the real-browser walk (tests/test_e2e_browser.py), rewrite the README's "
                          "docs/images/*.png from its screenshots")


@pytest.fixture
def make_tiny_dataset(tmp_path: Path) -> Callable[..., Path]:
    """A function writing a tiny dataset under tmp_path: make_tiny_dataset(name="data", per_class=3, layout="mirdata")."""

    def make(name: str = "data", **options) -> Path:
        return write_tiny_dataset(tmp_path / name, **options)

    return make


@pytest.fixture
def tiny_dataset(make_tiny_dataset: Callable[..., Path]) -> Path:
    """Root of a 72-clip synthetic dataset (3 per class per split, 44.1 kHz float32, mirdata layout)."""
    return make_tiny_dataset()


@pytest.fixture
def medley_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder set as $MEDLEY_CACHE for the test (and $MEDLEY_DATA unset)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("MEDLEY_CACHE", str(cache))
    monkeypatch.delenv("MEDLEY_DATA", raising=False)
    return cache


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Give the next test the `__main__` this one started with. AppTest, like Streamlit, installs
    each script run as sys.modules["__main__"]; a later test that spawns a process would re-run that
    page in the child (seen: test_demo's daemonic process ran the Predict page after an AppTest)."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
