"""Probe audio for out-of-distribution checks: clips that the 8-class classifier should flag.

Used to measure out-of-distribution detection (engine.learn.ood, benchmarks/trust.py). Two sets:

- synthetic non-instrument audio (`non_instrument_clips`), surely unlike any training clip;
- instruments outside the 8 classes (`other_instrument_clips`, issue #24: "any instrument outside
  the 8 classes should be flagged"), see OTHER_INSTRUMENTS.

Non-instrument kinds (each clip's settings drawn from a seeded generator, so a seed gives the
same clips on any machine):

    near-silence   a noise floor at -70..-60 dBFS (digital silence is refused before any
                   model sees it: engine.predict.predictor.check_signal)
    white noise    Gaussian, -20..-6 dBFS RMS
    sine           one pure tone, 80-4000 Hz, steady
    formant sweep  speech-like: a 90-250 Hz glottal pulse train with a wobbling pitch,
                   through three formant resonances that glide between vowel positions,
                   in syllables of 120-300 ms separated by short pauses
    drum bursts    noise bursts with a fast exponential decay (30-200 ms), band-passed by
                   a random one-pole pair, at 2-8 hits per second

Output clips are mono float32 (samples,), peak at most 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from .audio import fit_to_length, resample
from .demo import SAMPLE_RATE, Instrument, _soundfont_paths, _song_style, recorded_clip

KINDS = ("near-silence", "white noise", "sine", "formant sweep", "drum bursts")

# Instruments outside the 8 classes: name -> how the demo's phrase generator plays it (one GM
# program, 0-based; MIDI pitch range; vibrato, bends, sustained: as for the classes in
# demo.INSTRUMENTS). None of these programs is a class's program, sibling, held-out or test
# program (tests/test_probes.py checks against demo.INSTRUMENTS), and in both soundfonts
# (TimGM6mb, Merlin) none of their presets plays a sample that a class's preset plays (read from
# the soundfonts' preset -> instrument -> sample tables; tuba 58 was left out: it holds a trumpet
# sample in both). One per family: tuned percussion, organ, free reed, plucked (nylon guitar,
# harp, sitar), bowed string, double reed.
OTHER_INSTRUMENTS: dict[str, Instrument] = {
    "marimba": Instrument((12,), 45, 84, False, False, False, (12,)),  # A2..C6, decays
    "church organ": Instrument((19,), 36, 84, False, False, True, (19,)),  # C2..C6
    "accordion": Instrument((21,), 53, 84, False, False, True, (21,)),  # F3..C6
    "nylon guitar": Instrument((24,), 40, 76, False, False, False, (24,)),  # E2..E5, decays
    "cello": Instrument((42,), 36, 72, True, False, True, (42,)),  # C2..C5
    "harp": Instrument((46,), 36, 91, False, False, False, (46,)),  # C2..G6, decays
    "bassoon": Instrument((70,), 34, 72, True, False, True, (70,)),  # Bb1..C5
    "sitar": Instrument((104,), 48, 77, False, True, False, (104,)),  # C3..F5, decays, bends
}


# Outlier exposure (engine.learn.train, `train.outlier_exposure`): instruments outside the 8
# classes that a run may be TRAINED to be unsure about. Kept apart from OTHER_INSTRUMENTS by whole
# General MIDI family, so that the probes above still measure instruments of kinds the run never
# heard: basses (32-39), synth leads (80-87) and percussive (112-119), none of which is a class's
# family or a probe's (tests/test_probes.py checks both). Pads were left out: in GM sound sets they
# are often built from string or choir samples, which two classes play.
EXPOSURE_INSTRUMENTS: dict[str, Instrument] = {
    "acoustic bass": Instrument((32,), 28, 55, False, False, False, (32,)),  # E1..G3, decays
    "fingered bass": Instrument((33,), 28, 55, False, False, False, (33,)),
    "fretless bass": Instrument((35,), 28, 55, False, True, False, (35,)),
    "synth bass": Instrument((38,), 28, 60, False, False, False, (38,)),
    "square lead": Instrument((80,), 48, 84, False, False, True, (80,)),  # C3..C6
    "sawtooth lead": Instrument((81,), 48, 84, False, False, True, (81,)),
    "bass and lead": Instrument((87,), 36, 72, False, False, True, (87,)),
    "tinkle bell": Instrument((112,), 60, 96, False, False, False, (112,)),
    "agogo": Instrument((113,), 55, 80, False, False, False, (113,)),
    "steel drums": Instrument((114,), 52, 84, False, False, False, (114,)),
    "woodblock": Instrument((115,), 60, 84, False, False, False, (115,)),
    "taiko": Instrument((116,), 36, 60, False, False, False, (116,)),
    "melodic tom": Instrument((117,), 40, 64, False, False, False, (117,)),
}


def other_instrument_clips(per_program: int, sr: int, samples: int, seed: int = 0, *,
                           soundfont: str | Path | None = None, resampler: str = "soxr_hq",
                           instruments: dict[str, Instrument] | None = None) -> dict[str, list[np.ndarray]]:
    """name (`instruments`, in order; default OTHER_INSTRUMENTS) -> `per_program` clips, each
    (samples,) float32 at `sr` Hz, peak at most 0.9, of an instrument outside the 8 classes.

    Made exactly as the demo's training clips (demo.recorded_clip: a phrase of a song whose
    tempo, key, register, tuning, dynamics, style and recording chain come from demo._song_style,
    rendered at 44.1 kHz, cut to 131,072 samples, recorded), then resampled to `sr` with
    `resampler` (audio.resample, as datasets are loaded) and cut or zero-padded to `samples`.
    Each clip is its own song, drawn from a generator seeded by (seed, program, clip index): the
    same clips on any machine, and a clip does not change with `per_program`. `soundfont`: the
    .sf2 file the model was trained on (default TimGM6mb, the demo's training soundfont).
    """
    font = str(soundfont if soundfont is not None else _soundfont_paths()[0])
    chosen = OTHER_INSTRUMENTS if instruments is None else instruments
    return {name: [_other_clip(name, inst, font, np.random.default_rng([seed, inst.programs[0], i]), sr, samples, resampler)
                   for i in range(per_program)] for name, inst in chosen.items()}


def _other_clip(name: str, inst: Instrument, soundfont: str, rng: np.random.Generator, sr: int, samples: int,
                resampler: str) -> np.ndarray:
    """One song's clip of `inst` (see other_instrument_clips): (samples,) float32 at `sr` Hz."""
    song = _song_style(rng, inst, "training")  # program: inst's only one
    y = recorded_clip(soundfont, song, rng, f"{name} phrase (probe)")  # (131072,) at 44.1 kHz
    return _peak_limited(fit_to_length(resample(y, SAMPLE_RATE, sr, method=resampler), samples))


def non_instrument_clips(per_kind: int, sr: int, samples: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """kind -> `per_kind` clips of `samples` samples at `sr` Hz (see the module docstring)."""
    rng = np.random.default_rng(seed)
    makers = {"near-silence": _near_silence, "white noise": _white_noise, "sine": _sine,
              "formant sweep": _formant_sweep, "drum bursts": _drum_bursts}
    return {kind: [_peak_limited(makers[kind](rng, sr, samples)) for _ in range(per_kind)] for kind in KINDS}


def _db(value: float) -> float:
    return float(10.0 ** (value / 20.0))


def _near_silence(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    return rng.standard_normal(n) * _db(rng.uniform(-70, -60))


def _white_noise(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    return rng.standard_normal(n) * _db(rng.uniform(-20, -6))


def _sine(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    freq = np.exp(rng.uniform(np.log(80), np.log(4000)))
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sr + rng.uniform(0, 2 * np.pi))


def _formant_sweep(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """Glottal pulses (wobbling f0) through 3 gliding formant resonators, gated into syllables."""
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 250) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))  # (n,) Hz
    phase = np.cumsum(f0 / sr)
    source = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    out = np.zeros(n)
    for low, high in ((300, 900), (800, 2400), (2200, 3200)):  # F1, F2, F3 ranges (Hz)
        centre = rng.uniform(low, high, 2)
        freq = np.interp(t, [0, t[-1]], centre)  # a glide from one vowel position to another
        out += _resonator(source, freq, bandwidth=80.0, sr=sr)
    return out * _syllable_gate(rng, sr, n)


def _resonator(x: np.ndarray, freq: np.ndarray, bandwidth: float, sr: int) -> np.ndarray:
    """A two-pole resonance whose centre frequency (n,) Hz moves sample by sample."""
    r = np.exp(-np.pi * bandwidth / sr)
    y = np.zeros_like(x)
    a1 = 2 * r * np.cos(2 * np.pi * freq / sr)
    for i in range(2, len(x)):
        y[i] = x[i] + a1[i] * y[i - 1] - r * r * y[i - 2]
    return y


def _syllable_gate(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    """1 inside syllables of 120-300 ms, 0 in pauses of 40-150 ms, with 10 ms ramps."""
    gate, pos = np.zeros(n), 0
    while pos < n:
        length = int(rng.uniform(0.12, 0.30) * sr)
        gate[pos:pos + length] = 1.0
        pos += length + int(rng.uniform(0.04, 0.15) * sr)
    ramp = np.ones(int(0.01 * sr)) / int(0.01 * sr)
    return np.convolve(gate, ramp, mode="same")


def _drum_bursts(rng: np.random.Generator, sr: int, n: int) -> np.ndarray:
    out = np.zeros(n)
    hits = int(rng.uniform(2, 8) * n / sr)
    for start in rng.integers(0, n, hits):
        length = min(n - start, int(0.4 * sr))
        decay = np.exp(-np.arange(length) / (rng.uniform(0.03, 0.2) * sr))
        out[start:start + length] += rng.standard_normal(length) * decay * rng.uniform(0.3, 1.0)
    low_pole, high_pole = rng.uniform(0.0, 0.95), rng.uniform(0.0, 0.9)
    low = lfilter([1 - low_pole], [1, -low_pole], out)  # one-pole low-pass
    return lfilter([1, -1], [1, -high_pole], low)  # one-pole high-pass


def _peak_limited(y: np.ndarray) -> np.ndarray:
    """float32, peak scaled down to 0.9 when above it."""
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    return (y * (0.9 / peak if peak > 0.9 else 1.0)).astype(np.float32)
