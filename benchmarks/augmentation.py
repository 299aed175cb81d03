"""What augmentation costs: seconds per training epoch with and without it, and the one-time
cost of making the augmented copies.

1. Epoch time. The recommended configuration (whole clip read as a sequence) trained on
   synthetic features shaped like the demo's training split (475 clips x 129 frames x 21),
   once plain and once with 4 augmented views per clip plus SpecAugment masking (time 20,
   features 4), alternating, `--repeats` times each. Augmented audio is featurised once and
   cached, so an epoch only picks a view per clip and masks the batch: the target is a
   ratio <= 2 (issue #12).
2. One-time cost per clip. Clean clip -> features against clip -> augment_clip (gain, eq,
   speed, noise) -> features, against clip -> held-out recording chain -> features, and
   against clip -> held-out source change -> chain -> features (the source view of the
   cross-collection validation), on synthetic 3-second clips at 22,050 Hz, each timed over
   the same clips in the same run.

    python benchmarks/augmentation.py              # CPU, ~2 min on 2 shared cores
    python benchmarks/augmentation.py --repeats 5 --epochs 3

Prints medians and ratios measured in this run; on a shared machine the absolute seconds
drift, the ratios much less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.data.augment import AUGMENTATIONS, augment_clip, heldout_chain, heldout_source  # noqa: E402
from engine.core.config import FeatureConfig  # noqa: E402
from engine.features.extract import clip_features  # noqa: E402
from engine.learn.presets import RECOMMENDED  # noqa: E402
from engine.learn.train import AUGMENTED, train_run  # noqa: E402

SR = 22050
DEMO_TRAINING, DEMO_VALIDATION = 475, 255  # clips of the demo dataset's training and validation splits


@dataclass
class Split:  # the fields of engine.features.extract.FeatureSet
    x: np.ndarray
    y: np.ndarray
    ids: list[str]


def synthetic(n: int, frames: int, dim: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    x = rng.normal(0, 1, (n, frames, dim)) + 0.3 * y[:, None, None]
    return Split(x.astype(np.float32), y.astype(np.int64), [str(i) for i in range(n)])


def epoch_seconds(augmented: bool, epochs: int, hidden: int, train_clips: int = DEMO_TRAINING) -> float:
    """Median seconds per epoch (training + per-epoch validation) over `epochs` epochs, on
    `train_clips` training clips and validation in the demo's proportion (475 : 255)."""
    fc = RECOMMENDED.features
    val_clips = max(8, train_clips * DEMO_VALIDATION // DEMO_TRAINING)
    train = synthetic(train_clips, fc.total_frames, fc.feature_dim, 0)
    val = synthetic(val_clips, fc.total_frames, fc.feature_dim, 1)
    data = {"training": train, "validation": val}
    changes = {"train.epochs": epochs, "model.hidden_size": hidden}
    if augmented:
        views = np.stack([train.x + np.random.default_rng(v).normal(0, 0.3, train.x.shape).astype(np.float32)
                          for v in range(4)])
        data[AUGMENTED] = Split(views, train.y, train.ids)
        changes |= {"train.augment": ",".join(AUGMENTATIONS), "train.augment_views": 4,
                    "train.time_mask": 20, "train.freq_mask": 4}
    # Outlier exposure off: this measures what augmentation costs, and its clips are not loaded here.
    result = train_run(RECOMMENDED.with_values(**changes, **{"train.outlier_exposure": 0.0}), data, device="cpu")
    seconds = [r["seconds"] for r in result.history]
    return statistics.median(np.diff([0.0, *seconds]))


def per_clip_ms(clips: list[np.ndarray], transform) -> float:
    """Median milliseconds per clip for transform -> features (FeatureConfig(frames=None))."""
    config = FeatureConfig(frames=None)
    times = []
    for index, y in enumerate(clips):
        start = time.perf_counter()
        clip_features(transform(index, y), config)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=RECOMMENDED.model.hidden_size)
    parser.add_argument("--clips", type=int, default=40, help="clips for the one-time cost per clip")
    parser.add_argument("--train-clips", type=int, default=DEMO_TRAINING, help="training clips of the epoch timing")
    args = parser.parse_args()

    plain, aug = [], []
    for _ in range(args.repeats):  # alternate, so drift in the machine's speed hits both sides
        plain.append(epoch_seconds(False, args.epochs, args.hidden, args.train_clips))
        aug.append(epoch_seconds(True, args.epochs, args.hidden, args.train_clips))
    p, a = statistics.median(plain), statistics.median(aug)
    print(f"epoch, plain:                      {p:.2f} s (median of {args.repeats} runs x {args.epochs} epochs)")
    print(f"epoch, 4 views + SpecAugment:      {a:.2f} s")
    print(f"epoch ratio (augmented / plain):   {a / p:.2f}x (target <= 2x)")

    rng = np.random.default_rng(0)
    t = np.arange(65536) / SR
    clips = [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.01 * rng.standard_normal(65536)).astype(np.float32)
             for _ in range(args.clips)]
    clean = per_clip_ms(clips, lambda i, y: y)
    augmented = per_clip_ms(clips, lambda i, y: augment_clip(y, SR, AUGMENTATIONS, np.random.default_rng(i)))
    held = per_clip_ms(clips, lambda i, y: heldout_chain(y, SR, f"clip{i}"))
    print(f"one clip, clean -> features:       {clean:.1f} ms (median of {args.clips})")
    print(f"one clip, augmented -> features:   {augmented:.1f} ms ({augmented / clean:.1f}x clean; once per view, then cached)")
    print(f"one clip, held-out chain -> feat.: {held:.1f} ms ({held / clean:.1f}x clean; once per validation clip, cached)")
    source = per_clip_ms(clips, lambda i, y: heldout_chain(heldout_source(y, SR, f"clip{i}"), SR, f"clip{i}"))
    print(f"one clip, source + chain -> feat.: {source:.1f} ms ({source / clean:.1f}x clean; once per validation clip, cached)")


if __name__ == "__main__":
    main()
