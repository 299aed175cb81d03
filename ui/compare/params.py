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


LABELLED_POINTS = 20  # the scatter names its points up to this many runs; beyond, hover for names
MAX_NUMBER_TICKS = 6  # a numeric axis of parallel coordinates labels each value up to this many, else min and max


def _spans_decades(x: pd.Series) -> bool:
    """Positive numbers spanning at least two decades: shown on a log scale."""
    x = x.dropna()
    return bool(len(x)) and bool((x > 0).all()) and x.max() / x.min() >= 100


def number_tick(value: float, log: bool) -> str:
    """A tick label: '1e-4' / '2.5e-4' on a log axis (no '1e-05'), else the tables' '%g'."""
    if not log:
        return value_label(float(value))
    mantissa, exponent = f"{float(value):.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def param_metric_chart(df: pd.DataFrame, param: str, metric_column: str) -> alt.Chart:
    """Scatter of a metric against one parameter over the runs of `df` (runs_frame rows):
    a numeric parameter on a quantitative axis (log when its values span >= 2 decades),
    anything else as categories. Each point carries its run's name (up to LABELLED_POINTS
    runs; text left of the points in the right half of the plot, right of the others, so that
    it stays inside; runs on one spot share one "a, b" label) and a tooltip."""
    data = df[["name", "status", param, metric_column]].dropna(subset=[metric_column]).copy()
    data["value"] = [str(shown_value(param, v)) if v is None or v != v else value_label(v) for v in data[param]]
    if _numeric(data[param]) and data[param].notna().all():  # a None among numbers ("whole clip"): categories
        data["x"] = pd.to_numeric(data[param], errors="coerce")
        log = _spans_decades(data["x"])
        x = alt.X("x:Q", title=param + (" (log scale)" if log else ""),
                  scale=alt.Scale(type="log", padding=24) if log else alt.Scale(zero=False, padding=24),
                  axis=alt.Axis(format=".0e" if log else "~g"))
        where = np.log10(data["x"]) if log else data["x"]
        lo, hi = where.min(), where.max()
        frac = (where - lo) / (hi - lo) if hi > lo else where * 0 + 0.5
        data["right_half"] = frac > 0.5
    else:
        order = [str(shown_value(param, None)) if v == "None" else v for v in param_values(df, param)]
        x = alt.X("value:N", title=param, sort=order, axis=alt.Axis(labelAngle=0, labelLimit=160))
        data["right_half"] = [order.index(v) > (len(order) - 1) / 2 if v in order else False for v in data["value"]]
        frac = pd.Series([(order.index(v) + 0.5) / len(order) if v in order else 0.5 for v in data["value"]],
                         index=data.index)
    # runs on one spot (same value, same metric to 0.1 point) share one label, "a, b", so that
    # their names do not print over each other
    spot = data["value"] + "|" + (data[metric_column] * 1000).round().astype(int).astype(str)
    data["label"] = data.groupby(spot)["name"].transform(lambda names: ", ".join(map(str, names)))
    data.loc[spot.duplicated(), "label"] = ""
    data["frac"] = frac
    hidden = hide_overlapping_labels(data, metric_column)
    base = alt.Chart(data.drop(columns="frac")).encode(
        x=x,
        y=alt.Y(f"{metric_column}:Q", title=metric_column, axis=alt.Axis(format=".0%"),
                scale=alt.Scale(domain=[0, 1])),  # every point inside the plot
        tooltip=["name:N", alt.Tooltip("value:N", title=param), alt.Tooltip(f"{metric_column}:Q", format=".1%"),
                 "status:N"],
    )
    points = base.mark_circle(size=80, opacity=0.75).encode(
        color=alt.Color("status:N", legend=alt.Legend(orient="bottom", title="run status")))
    layers = [points]
    if len(data) <= LABELLED_POINTS:
        for right, align, dx in ((False, "left", 7), (True, "right", -7)):
            layers.append(base.transform_filter((alt.datum.right_half == right) & (alt.datum.label != ""))
                          .mark_text(align=align, dx=dx, fontSize=11, limit=220, color="#444").encode(text="label:N"))
    chart = alt.layer(*layers).properties(height=320)
    if hidden and len(data) <= LABELLED_POINTS:
        chart = chart.properties(title=alt.TitleParams(
            "", subtitle=f"{hidden} name(s) not printed where labels would overlap: hover a point for its run",
            fontSize=11))
    return chart


PLOT_WIDTH_PX, PLOT_HEIGHT_PX = 560.0, 250.0  # the scatter's plot area, about (for label collisions)
CHAR_PX, LINE_PX = 6.3, 13.0  # an 11 px label: width per character, line height


def hide_overlapping_labels(data: pd.DataFrame, metric_column: str) -> int:
    """Blank the `label` of points whose text box would overlap one already placed (highest
    metric first: the best runs keep their names), estimated on a plot of about PLOT_WIDTH_PX
    x PLOT_HEIGHT_PX from `frac` (x position in [0, 1]), the metric (y in [0, 1]) and
    `right_half` (text left of the point). Returns how many labels were blanked."""
    placed: list[tuple[float, float, float, float]] = []
    hidden = 0
    for index in data.sort_values(metric_column, ascending=False, kind="stable").index:
        label = data.at[index, "label"]
        if not label:
            continue
        x = float(data.at[index, "frac"]) * PLOT_WIDTH_PX
        y = (1.0 - float(data.at[index, metric_column])) * PLOT_HEIGHT_PX
        width = min(220.0, CHAR_PX * len(label))
        box = (x - 7 - width, x - 7) if data.at[index, "right_half"] else (x + 7, x + 7 + width)
        box = (*box, y - LINE_PX / 2, y + LINE_PX / 2)
        if any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3] for b in placed):
            data.at[index, "label"] = ""
            hidden += 1
        else:
            placed.append(box)
    return hidden


def parallel_frame(df: pd.DataFrame, params: Sequence[str], metric_column: str) -> pd.DataFrame:
    """Long frame for parallel coordinates: one row per (run, axis) with `position` in [0, 1]
    (numbers min-max scaled, log10 first for positive values spanning >= 2 decades; categories
    spread evenly), the raw `value` label, the axis `title` ("train.lr (log)" on a log axis)
    and `tick`: the text shown beside the axis at that position ("1e-4", "70.8%" for the metric;
    "" where a numeric axis of many values shows only its ends)."""
    data = df.dropna(subset=[metric_column])
    rows = []
    for axis in [*params, metric_column]:
        column = data[axis]
        log = False
        if _numeric(column):
            x = pd.to_numeric(column, errors="coerce").astype(float)
            log = _spans_decades(x)
            scaled = np.log10(x) if log else x
            lo, hi = scaled.min(), scaled.max()
            pos = (scaled - lo) / (hi - lo) if hi > lo else scaled * 0 + 0.5
            ends = {x.min(), x.max()}
            few = x.nunique() <= MAX_NUMBER_TICKS and axis != metric_column
            ticks = [("" if not (few or v in ends) else f"{100 * v:.1f}%" if axis == metric_column
                      else number_tick(v, log)) for v in x]
        else:
            labels = column.map(value_label)
            order = param_values(data, axis)
            pos = labels.map(lambda v: order.index(v) / max(1, len(order) - 1) if len(order) > 1 else 0.5)
            ticks = [str(shown_value(axis, None)) if v is None or v != v else value_label(v) for v in column]
        title = f"{axis} (log)" if log else axis
        for run_id, name, raw, p, tick, m in zip(data["id"], data["name"], column, pos, ticks, data[metric_column]):
            rows.append({"id": run_id, "name": name, "axis": axis, "title": title, "position": float(p),
                         "value": value_label(raw), "tick": tick, "metric": float(m)})
    return pd.DataFrame(rows, columns=["id", "name", "axis", "title", "position", "value", "tick", "metric"])


def parallel_coordinates_chart(long: pd.DataFrame, axes: Sequence[str]) -> alt.Chart:
    """One line per run across the axes (in `axes` order, titled "(log)" where log-scaled),
    coloured by the metric; each axis labelled with its formatted values."""
    titles = dict(zip(long["axis"], long["title"])) if len(long) else {}
    metric_name = axes[-1] if axes else "metric"
    base = alt.Chart(long).encode(x=alt.X("title:N", sort=[titles.get(a, a) for a in axes], title=None,
                                          axis=alt.Axis(labelAngle=0, labelLimit=140, labelOverlap=False)))
    lines = base.mark_line(opacity=0.6).encode(
        y=alt.Y("position:Q", axis=None, scale=alt.Scale(domain=[0, 1])),
        detail="id:N",
        # light to dark blue: every line readable on white (viridis' yellow end was not)
        color=alt.Color("metric:Q", scale=alt.Scale(range=["#9ecae1", "#08306b"]), title=metric_name,
                        legend=alt.Legend(format=".0%", orient="bottom")),
        tooltip=["name:N", alt.Tooltip("axis:N", title="parameter"), "value:N",
                 alt.Tooltip("metric:Q", title=metric_name, format=".1%")],
    )
    ticks = base.transform_filter(alt.datum.tick != "").mark_text(align="left", dx=5, dy=-7, fontSize=10,
                                                                   color="#555").encode(
        y="position:Q", text="tick:N"
    ).transform_aggregate(position="mean(position)", groupby=["title", "tick"])
    return (lines + ticks).properties(height=320)
