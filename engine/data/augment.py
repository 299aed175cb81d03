"""Audio transforms: training-time augmentation, the held-out recording chain and the
held-out source change.

Three disjoint families of effects, from pedalboard (Spotify's C++ audio-effects library;
JUCE filters, Rubber Band) plus soxr for resampling and libsndfile's MP3 codec, applied to a decoded clip at the
model's sample rate (mono float32, (samples,)):

- Training augmentation (`augment_clip`), chosen by name in `TrainConfig.augment`:
    "gain"   level change, -12..+6 dB
    "eq"     a random spectral envelope: low shelf (80-400 Hz) and high shelf (2-8 kHz),
             +-6 dB each, and two gentle peaks (300 Hz-6 kHz, Q 0.7-2, +-6 dB): the kind of
             difference between two instruments' bodies, two microphones or two sample sets
    "speed"  speed perturbation by resampling: pitch and formants move together by up to
             +-1 semitone (Ko et al., Interspeech 2015); a cheap stand-in for pitch shifting
             (pedalboard's PitchShift costs ~60 ms per clip, this ~1 ms)
    "noise"  brown-to-white background noise at 15-40 dB SNR
- The held-out recording chain (`heldout_chain`), never used by training augmentation: a
  band-limited microphone (steep high-pass 120-400 Hz and low-pass 3.5-7 kHz), a compressor
  (threshold -30..-15 dBFS, ratio 2-6), a room (pedalboard Reverb, room size 0.3-0.8, wet
  0.15-0.35) and a low-bitrate MP3 codec (LAME VBR quality 6-9.5, through libsndfile: LAME
  encodes, mpg123 decodes), then a random level.
  Each validation clip gets its own chain, drawn from a seed made of its uuid and
  HELDOUT_SEED: the same clip always gets the same chain, on any machine.
- The held-out source change (`heldout_source`), never used by training augmentation: what
  another collection changes in the *sound source* rather than in the channel. Another
  maker's (or sample set's) instrument has its body resonances elsewhere, so the spectral
  envelope (formants) is moved by 2-4 semitones up or down (12-26%: more than the training
  "speed" perturbation, which moves envelope and pitch together by at most 1 semitone, less
  than the distance between two members of one family, e.g. violin and viola) while the
  notes keep their pitch; another player plays other notes, so the pitch is moved by up to
  +-2 semitones while the envelope stays. Done with Rubber Band (pedalboard.time_stretch
  with formant preservation) after a resampling by the formant shift. Seeded by the clip's
  uuid and SOURCE_SEED. The cross-collection validation of the source (features.SOURCE)
  plays it and then the held-out recording chain: a new source heard through a new channel.

Every transform is deterministic given its numpy Generator / seed. Output: float32, same
length as the input, finite, peak at most 1.
"""

from __future__ import annotations

import hashlib
import io
from typing import Sequence

import numpy as np
import soxr

from ..core.config import AUGMENTATIONS, parse_augment  # noqa: F401 (here too: they live in config, which checks them)

AUGMENT_VERSION = 1  # bump when a training transform changes: names the augmented-feature cache
HELDOUT_VERSION = 2  # 2: MP3 through libsndfile, not pedalboard's MP3Compressor. Bump when the held-out chain changes: names its feature cache entries
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # Hz an MP3 can hold
HELDOUT_SEED = 20261130  # fixed: the chain of each validation clip never changes
SOURCE_VERSION = 1  # bump when the held-out source change changes: names its feature cache entries
SOURCE_SEED = 20261201  # fixed: the source change of each validation clip never changes
SOURCE_FORMANT_SEMITONES = (2.0, 4.0)  # |envelope shift|, either direction
SOURCE_PITCH_SEMITONES = 2.0  # |pitch shift| at most, envelope kept


def augment_clip(y: np.ndarray, sr: int, names: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One random draw of the training augmentations `names` applied to y (samples,) at sr Hz.

    Order: speed, eq, noise, gain. Returns float32 (samples,), the input length, peak <= 1.
    """
    from pedalboard import HighShelfFilter, LowShelfFilter, PeakFilter, Pedalboard

    out = np.asarray(y, dtype=np.float32)
    if "speed" in names:
        out = _speed(out, sr, float(rng.uniform(-1.0, 1.0)))
    if "eq" in names:
        board = Pedalboard([
            LowShelfFilter(float(rng.uniform(80, 400)), float(rng.uniform(-6, 6)), 0.707),
            HighShelfFilter(float(rng.uniform(2000, 8000)), float(rng.uniform(-6, 6)), 0.707),
            PeakFilter(float(np.exp(rng.uniform(np.log(300), np.log(6000)))), float(rng.uniform(-6, 6)),
                       float(rng.uniform(0.7, 2.0))),
            PeakFilter(float(np.exp(rng.uniform(np.log(300), np.log(6000)))), float(rng.uniform(-6, 6)),
                       float(rng.uniform(0.7, 2.0))),
        ])
        out = board(out, sr)
    if "noise" in names:
        out = out + _coloured_noise(rng, len(out), float(rng.uniform(0.0, 0.97))) * _rms(out) * 10 ** (
            -float(rng.uniform(15, 40)) / 20)
    if "gain" in names:
        out = out * np.float32(10 ** (float(rng.uniform(-12, 6)) / 20))
    return _finish(out, len(y))


def mp3_roundtrip(y: np.ndarray, sr: int, vbr_quality: float) -> np.ndarray:
    """y (samples,) float32 at sr Hz -> the same audio encoded to MP3 and decoded back, (samples,).

    `vbr_quality` is LAME's VBR scale (0 best .. 10 worst), given to libsndfile as its
    compression level (vbr_quality / 10). libsndfile (inside the soundfile wheel) encodes
    with LAME and decodes with mpg123, gapless: the output is sample-aligned with the input.
    Not pedalboard's MP3Compressor: its decoder (decode_layer3_frame) wrote past a thread's
    stack now and then here and killed the process (segfaults seen in dmesg while computing
    this chain in feature-extraction threads).
    """
    import soundfile as sf

    x = _finish(np.asarray(y, dtype=np.float32), len(y))  # scaled down if past full scale: MP3 holds no more
    rate = next((r for r in MP3_RATES if r >= sr), MP3_RATES[-1])  # MPEG-1/2/2.5 rates only
    if rate != sr:
        x = soxr.resample(x, sr, rate).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, x, rate, format="MP3", compression_level=min(1.0, max(0.0, vbr_quality / 10.0)),
             bitrate_mode="VARIABLE")
    buffer.seek(0)
    out, _ = sf.read(buffer, dtype="float32")
    out = out.reshape(-1)
    if rate != sr:
        out = soxr.resample(out, rate, sr).astype(np.float32)
    return _finish(out, len(y))


def heldout_chain(y: np.ndarray, sr: int, uuid: str) -> np.ndarray:
    """The held-out recording chain of the clip named `uuid`: y (samples,) at sr Hz -> float32 (samples,).

    Deterministic: the chain's settings come from sha256(uuid, HELDOUT_SEED) alone.
    """
    from pedalboard import Compressor, HighpassFilter, LowpassFilter, Pedalboard, Reverb

    rng = np.random.default_rng(clip_seed(uuid, HELDOUT_SEED))
    board = Pedalboard([
        HighpassFilter(float(rng.uniform(120, 400))),
        HighpassFilter(float(rng.uniform(120, 400))),  # two in series: a steep (12 dB/oct) cut
        LowpassFilter(float(rng.uniform(3500, 7000))),
        LowpassFilter(float(rng.uniform(3500, 7000))),
        Compressor(threshold_db=float(rng.uniform(-30, -15)), ratio=float(rng.uniform(2, 6)),
                   attack_ms=float(rng.uniform(2, 20)), release_ms=float(rng.uniform(50, 250))),
        Reverb(room_size=float(rng.uniform(0.3, 0.8)), damping=float(rng.uniform(0.2, 0.8)),
               wet_level=float(rng.uniform(0.15, 0.35)), dry_level=float(rng.uniform(0.7, 1.0)), width=0.0),
    ])
    vbr_quality = float(rng.uniform(6.0, 9.5))
    x = np.asarray(y, dtype=np.float32)
    out = mp3_roundtrip(board(x, sr), sr, vbr_quality)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0:
        out = out * np.float32(rng.uniform(0.1, 0.9) / peak)
    return _finish(out, len(x))


def heldout_source(y: np.ndarray, sr: int, uuid: str) -> np.ndarray:
    """The held-out source change of the clip named `uuid`: y (samples,) at sr Hz -> float32 (samples,).

    The spectral envelope moves by `formant` semitones (2-4, up or down) with the pitch kept,
    and the pitch by `pitch` semitones (-2..2) with the envelope kept: a resampling moves both
    by `formant` (and shortens or lengthens the clip), then Rubber Band moves the pitch by
    pitch - formant with formants preserved and restores the length. Deterministic: settings
    from sha256(uuid, SOURCE_SEED) alone. Level as given (at most scaled down to peak 1).
    """
    from pedalboard import time_stretch

    formant, pitch = source_shift(uuid)
    x = np.asarray(y, dtype=np.float32)
    moved = _speed(x, sr, formant)  # envelope and pitch up by `formant`, length / 2**(formant/12)
    out = time_stretch(moved, float(sr), stretch_factor=2.0 ** (-formant / 12.0),
                       pitch_shift_in_semitones=pitch - formant, preserve_formants=True)
    return _finish(np.asarray(out, dtype=np.float32).reshape(-1), len(x))


def source_shift(uuid: str) -> tuple[float, float]:
    """(formant, pitch) shifts in semitones of the held-out source change of clip `uuid`."""
    rng = np.random.default_rng(clip_seed(uuid, SOURCE_SEED))
    formant = float(rng.uniform(*SOURCE_FORMANT_SEMITONES)) * (1.0 if rng.random() < 0.5 else -1.0)
    return formant, float(rng.uniform(-SOURCE_PITCH_SEMITONES, SOURCE_PITCH_SEMITONES))


def clip_seed(uuid: str, salt: int) -> int:
    """A 63-bit seed from a clip's uuid and a salt (stable across processes and machines)."""
    digest = hashlib.sha256(f"{uuid}\0{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _speed(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Play y faster/slower by 2**(semitones/12) (pitch and tempo together), via soxr."""
    factor = 2.0 ** (semitones / 12.0)
    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def _coloured_noise(rng: np.random.Generator, n: int, pole: float) -> np.ndarray:
    """Noise (n,) float32 through a one-pole low-pass (pole 0: white, ->1: brown), unit RMS."""
    from scipy import signal

    noise = signal.lfilter([1.0], [1.0, -pole], rng.standard_normal(n))
    return (noise / max(_rms(noise), 1e-12)).astype(np.float32)


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0


def _finish(y: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad to `length`, replace non-finite values, and scale down if the peak passes 1."""
    out = np.zeros(length, dtype=np.float32)
    n = min(length, len(y))
    out[:n] = np.nan_to_num(np.asarray(y[:n], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(out))) if n else 0.0
    return out / np.float32(peak) if peak > 1.0 else out
