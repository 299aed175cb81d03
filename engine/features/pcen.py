"""Per-channel energy normalisation (PCEN) of mel-band energies, shared by both feature backends.

PCEN (Wang et al., ICASSP 2017; Lostanlen et al., IEEE SPL 2019) replaces the log of each
mel band's energy E(t, f) by an automatic gain control and a root compression:

    M(t, f) = (1 - b) M(t - 1, f) + b E(t, f)          (a first-order IIR smoother in time)
    PCEN(t, f) = (E / (eps + M)^gain + bias)^power - bias^power

so a band's slowly varying level (a microphone's or a room's colouring, the overall loudness)
is divided out while onsets and the spectral shape within a band survive. Computed by
`librosa.pcen` with its default parameters (gain 0.98, bias 2, power 0.5, time constant
0.4 s, eps 1e-6), on the slaney mel energies (power) scaled by 2**31, as librosa's
documentation scales float audio so that eps is negligible for anything but silence.
"""

from __future__ import annotations

import numpy as np

PCEN_SCALE = float(2**31)


def pcen_mel(mel_power: np.ndarray, sr: int, hop_length: int) -> np.ndarray:
    """mel_power (..., bands, frames) >= 0 -> PCEN values, same shape, float32 (time is the last axis)."""
    import librosa

    mel = np.asarray(mel_power, dtype=np.float32)
    if mel.size == 0:
        return mel.copy()
    return librosa.pcen(mel * np.float32(PCEN_SCALE), sr=sr, hop_length=hop_length, axis=-1).astype(np.float32)
