"""Outlier-exposure clips as features: instruments outside the 8 classes that a run with
`train.outlier_exposure` is trained to be unsure about (engine.learn.train).

The clips are engine.data.probes.EXPOSURE_INSTRUMENTS (basses, synth leads, percussive: GM
families that neither a class nor a probe instrument belongs to), OUTLIER_CLIPS_PER_PROGRAM songs
each, rendered as the demo's training clips are, from the soundfont the dataset's training clips
come from (engine.data.demo.training_soundfont), and featurised like any clip (clip_features).
Cached whole-clip and un-normalised in `cache/features/outliers-...npy` (with the splits' checksum
sidecar, through extract's cache reader and writer), keyed by the feature
settings, the soundfont, the count and OUTLIERS_VERSION; `frames` and CMVN apply after loading,
as for a dataset's splits.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ..core import paths
from ..core.config import FeatureConfig
from ..data.demo import training_soundfont
from ..data.probes import EXPOSURE_INSTRUMENTS, other_instrument_clips
from .extract import FeatureSet, _read_cache, _write_cache, clip_features, normalize_clips

OUTLIER_CLIPS_PER_PROGRAM = 32  # x 13 programs = 416 clips, about as many as the demo's training split
OUTLIER_SEED = 1  # not the probes' seeds: other songs even where a program were shared
OUTLIERS_VERSION = 1  # bump when the instruments or their rendering change
OUTLIER_LABEL = -1  # the clips' y: no class


def outlier_clip_count(per_program: int = OUTLIER_CLIPS_PER_PROGRAM) -> int:
    """How many outlier clips a run with outlier exposure trains beside its own."""
    return len(EXPOSURE_INSTRUMENTS) * per_program


def load_outlier_features(config: FeatureConfig, data: str, *, per_program: int = OUTLIER_CLIPS_PER_PROGRAM,
                          progress: Callable[[int, int, str], None] | None = None,
                          use_cache: bool = True) -> FeatureSet:
    """The outlier clips' features for a run on dataset spec `data`: x (n, config.num_frames,
    config.feature_dim) float32, y all OUTLIER_LABEL, ids naming instrument and song."""
    font = training_soundfont(data)
    whole = replace(config, frames=None, clip_norm=False)
    path = paths.cache_dir("features") / f"outliers-v{OUTLIERS_VERSION}-{font.stem}-{per_program}-{whole.digest()}.npy"
    names = [f"outlier {name} {i}" for name in EXPOSURE_INSTRUMENTS for i in range(per_program)]
    x = _read_cache(path, (len(names), whole.total_frames, whole.feature_dim), np.float32) if use_cache else None
    if x is None or not np.isfinite(x).all():
        x = _compute(whole, font, per_program, progress)
        _write_cache(path, x)  # the splits' cache writer: checksum sidecar, atomic, disk-full in words
    x = np.ascontiguousarray(x[:, :config.num_frames], dtype=np.float32)
    return FeatureSet(x=normalize_clips(x) if config.clip_norm else x,
                      y=np.full(len(x), OUTLIER_LABEL, dtype=np.int64), ids=names)


def _compute(whole: FeatureConfig, font, per_program: int, progress) -> np.ndarray:
    """(n, total_frames, feature_dim) float32: render every outlier clip and featurise it."""
    clips = other_instrument_clips(per_program, whole.sample_rate, whole.clip_samples, OUTLIER_SEED,
                                   soundfont=font, resampler=whole.resampler, instruments=EXPOSURE_INSTRUMENTS)
    flat = [y for ys in clips.values() for y in ys]
    out = []
    for i, y in enumerate(flat):
        out.append(clip_features(y, whole))
        if progress is not None:
            progress(i + 1, len(flat), f"outlier clips: {i + 1}/{len(flat)}")
    return np.stack(out).astype(np.float32)
