"""What a run will write, estimated before it starts, and the refusal when the disk holding the
run store lacks that plus a margin (engine.core.space.check_space). Bytes throughout.

A run writes its model (float32 weights), its checkpoint (the weights, the optimizer's state
and the best epoch's weights: about 3x the model) written beside the previous one before it
replaces it (so twice), its predictions (JSON: per clip 8 probabilities and an id) and a small
meta.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..core.config import RunConfig
from ..core.space import check_space

CHECKPOINT_PER_MODEL = 3      # weights + optimizer moments + best weights, in model sizes
PREDICTION_BYTES_PER_CLIP = 8 * 24 + 64  # 8 probabilities as JSON text, the label and the clip id (per 8 classes)
META_BYTES = 256 * 1024       # meta.json with a long history, generously


def model_bytes(config: RunConfig) -> int:
    """Bytes of the model's float32 weights (model.pt), from the parameters of the built model."""
    from ..learn.model import build_model

    model = build_model(config.model, config.features, num_classes=len(config.class_names))
    return sum(p.numel() for p in model.parameters()) * 4


def prediction_bytes(data: dict[str, Any]) -> int:
    """Bytes of predictions.json for the evaluated splits of `data` (every split but training)."""
    clips = sum(len(getattr(split, "y", ())) for name, split in data.items() if not name.startswith("training"))
    return clips * PREDICTION_BYTES_PER_CLIP


def run_bytes(config: RunConfig, data: dict[str, Any]) -> int:
    """Estimated peak bytes one run writes: model + two checkpoints (the old one stays until
    the new one is complete) + predictions + metadata."""
    model = model_bytes(config)
    return model + 2 * CHECKPOINT_PER_MODEL * model + prediction_bytes(data) + META_BYTES


def check_run_space(runs_dir: Path, configs: Sequence[RunConfig], data: dict[str, Any]) -> None:
    """Refuse to start the runs (DiskFull, in words) when the disk holding `runs_dir` has less
    free than they will write plus the margin."""
    needed = sum(run_bytes(config, data) for config in configs)
    what = "this run" if len(configs) == 1 else f"these {len(configs)} runs"
    check_space(runs_dir, needed, f"{what} (its model, checkpoints and predictions)")
