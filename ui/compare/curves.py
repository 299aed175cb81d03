"""Training curves of several runs: per-epoch history frames, seed groups, and mean +- band charts.
No streamlit here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from engine.compare.stats import AGGREGATE_COLUMNS, aggregate_histories, mean_std
from ui import defaults
from ui.charts import BOTTOM_LEGEND, x_axis
from ui.compare.values import METRICS, metric


def history_frame(runs: Sequence[Any], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (run, epoch): run (label; default the run's name), id, epoch, seconds,
    train_loss, val_loss, val_accuracy (plus any other numeric history keys). Non-finite
    values become NaN."""
    labels = labels if labels is not None else {run.id: run.name for run in runs}
    frames = []
    for run in runs:
        if not run.history:
            continue
        part = pd.DataFrame(run.history)
        part.insert(0, "run", labels[run.id])
        part.insert(1, "id", run.id)
        if "epoch" not in part:
            part["epoch"] = np.arange(1, len(part) + 1)
        frames.append(part)
    if not frames:
        return pd.DataFrame(columns=["run", "id", "epoch", "seconds", "train_loss", "val_loss", "val_accuracy"])
    df = pd.concat(frames, ignore_index=True)
    for column in df.columns:
        if column not in ("run", "id"):
            df[column] = pd.to_numeric(df[column], errors="coerce").replace([np.inf, -np.inf], np.nan)
    return df


def seed_groups(runs: Sequence[Any], labels: Mapping[str, str]) -> dict[str, list[Any]]:
    """Group label -> runs that differ only by seed (same group_key), first-seen order.
    A group of several runs is labelled 'name of its first run (k seeds)'."""
    by_key: dict[str, list[Any]] = {}
    for run in runs:
        by_key.setdefault(run.group_key, []).append(run)
    out: dict[str, list[Any]] = {}
    for members in by_key.values():
        first = labels[members[0].id]
        out[first if len(members) == 1 else f"{first} ({len(members)} seeds)"] = members
    return out


def group_bands(groups: Mapping[str, Sequence[Any]], key: str, x: str = "epoch") -> pd.DataFrame:
    """Per group and epoch: mean, std, min, max, n of history `key` (engine.compare.stats.aggregate_histories),
    lo/hi = mean ± std, and `seconds` = the mean wall-clock time of that epoch."""
    frames = []
    for label, members in groups.items():
        histories = [run.history or [] for run in members]
        agg = pd.DataFrame(aggregate_histories(histories, key), columns=list(AGGREGATE_COLUMNS))
        if agg.empty:
            continue
        secs = pd.DataFrame(aggregate_histories(histories, "seconds"), columns=list(AGGREGATE_COLUMNS))
        agg = agg.merge(secs[["epoch", "mean"]].rename(columns={"mean": "seconds"}), on="epoch", how="left")
        agg.insert(0, "group", label)
        frames.append(agg)
    if not frames:
        return pd.DataFrame(columns=["group", "epoch", "mean", "std", "min", "max", "n", "seconds", "lo", "hi"])
    df = pd.concat(frames, ignore_index=True)
    df["lo"] = df["mean"] - df["std"]
    df["hi"] = df["mean"] + df["std"]
    return df


def smooth_bands(bands: pd.DataFrame, smoothing: float) -> pd.DataFrame:
    """The band columns (mean, lo, hi, min, max) EMA-smoothed per group (ui.charts.ema)."""
    if smoothing <= 0 or bands.empty:
        return bands
    from ui.charts import ema

    out = bands.sort_values(["group", "epoch"]).copy()
    for column in ("mean", "lo", "hi", "min", "max"):
        out[column] = out.groupby("group", sort=False)[column].transform(lambda s: ema(s.to_numpy(float), smoothing))
    return out


def band_chart(bands: pd.DataFrame, *, x: str = "epoch", band: str = "std", y_title: str = "value",
               log_scale: bool = defaults.LOG_SCALE_LOSS, colors: Mapping[str, str] | None = None) -> alt.Chart:
    """Mean line per group with a shaded band: mean ± std (`band="std"`) or min..max (`band="minmax"`).
    colors: group label -> colour (a seed group takes its first run's colour, ui.colors)."""
    lo, hi = ("lo", "hi") if band == "std" else ("min", "max")
    df = bands.copy()
    if log_scale:
        df = df[(df["mean"] > 0)]
        df[lo] = df[lo].clip(lower=df["mean"].min() / 10 if len(df) else 1e-6)
    scale = alt.Scale(type="log") if log_scale else alt.Scale(zero=False)
    base = alt.Chart(df).encode(
        x=alt.X(f"{x}:Q", title="wall-clock seconds" if x == "seconds" else "epoch", axis=x_axis(x)),
        color=alt.Color("group:N", title="seed group", legend=alt.Legend(**BOTTOM_LEGEND),
                        scale=alt.Scale(domain=list(colors), range=list(colors.values()))
                        if colors else alt.Scale(scheme="tableau10")),
    )
    area = base.mark_area(opacity=0.2).encode(y=alt.Y(f"{lo}:Q", title=y_title, scale=scale), y2=f"{hi}:Q")
    line = base.mark_line().encode(
        y=alt.Y("mean:Q", title=y_title, scale=scale),
        tooltip=["group:N", f"{x}:Q", alt.Tooltip("mean:Q", format=".4f"), alt.Tooltip("std:Q", format=".4f"), "n:Q"],
    )
    return (area + line).properties(height=300)


def group_summary(groups: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """Per seed group: runs and 'mean ± std' of each table metric (in percent)."""
    rows = []
    for label, members in groups.items():
        row: dict[str, Any] = {"group": label, "runs": len(members)}
        for column, (split, key) in METRICS.items():
            mean, std, n = mean_std(metric(run, split, key) for run in members)
            row[column] = "–" if n == 0 else (f"{mean:.1%} (1 run)" if n == 1 or std is None
                                               else f"{mean:.1%} ± {std:.1%} ({n} runs)")
        rows.append(row)
    return pd.DataFrame(rows)
