"""Values and labels shared by the Compare views: the metrics of the runs table, one run's metric,
partial runs, unique run labels. No streamlit here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


# Parameters shown in the runs table next to the metrics (every parameter is filterable).
KEY_PARAMS: tuple[str, ...] = (
    "model.arch",
    "train.optimizer",
    "train.lr",
    "train.batch_size",
    "model.dropout",
    "model.hidden_size",
    "model.num_layers",
    "features.frames",
    "train.epochs",
    "train.seed",
)
# Table column -> (split, key of engine.learn.metrics.evaluate()).
METRICS: dict[str, tuple[str, str]] = {
    "val acc": ("validation", "accuracy"),
    "cross-val acc": ("validation_shift", "accuracy"),  # validation clips through the held-out recording chain
    "cross-val source acc": ("validation_source", "accuracy"),  # ... through the held-out source change, then that chain
    "cross-val program acc": ("validation_program", "accuracy"),  # demo songs of GM programs training never plays
    "test acc": ("test", "accuracy"),
    "test balanced acc": ("test", "balanced_accuracy"),
    "test macro-F1": ("test", "macro_f1"),
}
METRIC_COLUMNS: tuple[str, ...] = (*METRICS, "val-test gap")
BASE_COLUMNS: tuple[str, ...] = ("id", "name", "status", "tags", "created", "epochs", "partial")




def value_label(value: Any) -> str:
    """A parameter value as the filters and tables show it: 0.0001 -> '0.0001', None -> 'None'."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def metric(run: Any, split: str, key: str) -> float | None:
    """metrics[split][key] of a run as a float, None when absent or not finite."""
    value = ((run.metrics or {}).get(split) or {}).get(key)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def partial_epochs(run: Any) -> tuple[int, int] | None:
    """(epochs trained, epochs planned) of a run that stopped before its epochs (cancelled,
    interrupted, failed or diverged with some history), else None."""
    done, planned = len(run.history or []), run.config.train.epochs
    if run.status in ("queued", "running") or done == 0 or done >= planned:
        return None
    return done, planned


def run_labels(runs: Sequence[Any]) -> dict[str, str]:
    """run id -> a unique display label: the name, plus the id where names repeat, plus
    '(partial 41/50)' for a run that stopped before its epochs."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    labels = {}
    for run in runs:
        label = run.name if counts[run.name] == 1 or run.name == run.id else f"{run.name} [{run.id}]"
        partial = partial_epochs(run)
        labels[run.id] = f"{label} (partial {partial[0]}/{partial[1]})" if partial else label
    return labels


# What a missing (None) parameter value means, as tables show it; others show '–'.
NONE_WORDS: dict[str, str] = {"features.frames": "whole clip", "train.grad_clip": "off"}


def shown_value(param: str, value: Any) -> str | Any:
    """A parameter value as a table shows it: None in words ('whole clip', 'off', else '–')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE_WORDS.get(param, "–")
    return value


def shown_params(df: Any) -> Any:
    """The runs table with None in its parameter columns (dotted names) said in words. A column
    that gets words holds text only (3 -> '3' beside 'whole clip'): one type per column, so that
    it converts to Arrow (a column of numbers and words made Streamlit log an ArrowTypeError)."""
    out = df.copy()
    for column in out.columns:
        if "." in column and out[column].isna().any():
            out[column] = [shown_value(column, None) if v is None or (isinstance(v, float) and math.isnan(v))
                           else value_label(v) for v in out[column]]
    return out


def shown_diff(diff: Any) -> Any:
    """param_diff's table (rows = parameters, cells = value_label text) with 'None' said in words."""
    out = diff.copy()
    for param in out.index:
        out.loc[param] = [NONE_WORDS.get(param, "–") if v == "None" else v for v in out.loc[param]]
    return out
