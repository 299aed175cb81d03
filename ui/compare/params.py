"""Parameters against a metric over finished runs: a scatter and parallel coordinates.
No streamlit here."""

from __future__ import annotations

import math
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from ui.compare.table import param_values
from ui.compare.values import shown_value, value_label


def _numeric(series: pd.Series) -> bool:
    values = [v for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def param_metric_chart(df: pd.DataFrame, param: str, metric_column: str) -> alt.Chart:
    """Scatter of a metric against one parameter over the runs of `df` (runs_frame rows):
    a numeric parameter on a quantitative axis (log when its values span >= 2 decades),
    anything else as categories."""
    data = df[["name", "status", param, metric_column]].dropna(subset=[metric_column]).copy()
    data["value"] = [str(shown_value(param, v)) if v is None or v != v else value_label(v) for v in data[param]]
    if _numeric(data[param]) and data[param].notna().all():  # a None among numbers ("whole clip"): categories
        data["x"] = pd.to_numeric(data[param], errors="coerce")
        positive = data["x"].dropna()
        log = bool(len(positive)) and (positive > 0).all() and positive.max() / positive.min() >= 100
        x = alt.X("x:Q", title=param, scale=alt.Scale(type="log") if log else alt.Scale(zero=False, padding=12),
                  axis=alt.Axis(format="~g"))
    else:
        order = [str(shown_value(param, None)) if v == "None" else v for v in param_values(df, param)]
        x = alt.X("value:N", title=param, sort=order, axis=alt.Axis(labelAngle=0, labelLimit=160))
    return (
        alt.Chart(data)
        .mark_circle(size=80, opacity=0.7)
        .encode(
            x=x,
            y=alt.Y(f"{metric_column}:Q", title=metric_column, axis=alt.Axis(format=".0%"),
                    scale=alt.Scale(domain=[0, 1])),  # every point inside the plot
            color=alt.Color("status:N"),
            tooltip=["name:N", alt.Tooltip("value:N", title=param), alt.Tooltip(f"{metric_column}:Q", format=".1%")],
        )
        .properties(height=300)
    )


def parallel_frame(df: pd.DataFrame, params: Sequence[str], metric_column: str) -> pd.DataFrame:
    """Long frame for parallel coordinates: one row per (run, axis) with `position` in [0, 1]
    (numbers min-max scaled, log10 first for positive values spanning >= 2 decades; categories
    spread evenly) and the raw `value` label."""
    data = df.dropna(subset=[metric_column])
    rows = []
    for axis in [*params, metric_column]:
        column = data[axis]
        if _numeric(column):
            x = pd.to_numeric(column, errors="coerce").astype(float)
            if (x > 0).all() and x.max() / x.min() >= 100:
                x = np.log10(x)
            lo, hi = x.min(), x.max()
            pos = (x - lo) / (hi - lo) if hi > lo else x * 0 + 0.5
        else:
            labels = column.map(value_label)
            order = param_values(data, axis)
            pos = labels.map(lambda v: order.index(v) / max(1, len(order) - 1) if len(order) > 1 else 0.5)
        for run_id, name, raw, p, m in zip(data["id"], data["name"], column, pos, data[metric_column]):
            rows.append({"id": run_id, "name": name, "axis": axis, "position": float(p), "value": value_label(raw),
                         "metric": float(m)})
    return pd.DataFrame(rows, columns=["id", "name", "axis", "position", "value", "metric"])


def parallel_coordinates_chart(long: pd.DataFrame, axes: Sequence[str]) -> alt.Chart:
    """One line per run across the axes, coloured by the metric."""
    base = alt.Chart(long).encode(x=alt.X("axis:N", sort=list(axes), title=None, axis=alt.Axis(labelAngle=0)))
    lines = base.mark_line(opacity=0.6).encode(
        y=alt.Y("position:Q", axis=None),
        detail="id:N",
        color=alt.Color("metric:Q", scale=alt.Scale(scheme="viridis"), title="metric"),
        tooltip=["name:N", "axis:N", "value:N"],
    )
    ticks = base.mark_text(align="left", dx=4, fontSize=10, color="gray").encode(
        y="position:Q", text="value:N"
    ).transform_aggregate(position="mean(position)", groupby=["axis", "value"])
    return (lines + ticks).properties(height=320)
