"""Altair charts shared by the pages. Plain functions: DataFrames / lists in, `alt.Chart` out.

No streamlit in here; a page renders a chart with `st.altair_chart(chart, use_container_width=True)`.

Functions (inputs documented on each):
- loss_curves(df, x=, log_scale=, smoothing=)         train/val loss per epoch of one or more runs
- accuracy_curves(df, x=, columns=, smoothing=)       accuracy columns per epoch of one or more runs
- step_loss_chart(losses, steps_per_epoch=, ...)       training loss per optimiser step (one run)
- confusion_heatmap(matrix, class_names, normalize=, title=, domain=)
- per_class_bars(df, group=, value=, title=)           grouped bars: class x run (or split)
- class_count_chart(counts, share=)                    clips per class (and per split)
- waveform_chart(y, sr)                                min/max envelope of a clip
- matrix_heatmap(matrix, ...)                          any (rows, frames) matrix: spectrogram, features
- feature_boxplot(df, feature=)                        distribution of one value per class
- ema(values, smoothing)                               exponential moving average helper
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from engine.core.labels import SHORT_NAMES
from ui import defaults

X_TITLES = {"epoch": "epoch", "seconds": "wall-clock seconds", "step": "step"}


def x_axis(x: str) -> alt.Axis:
    """The x axis of a curve: whole epochs (no 1.5) or formatted seconds / steps."""
    return alt.Axis(format="d", tickMinStep=1) if x in ("epoch", "step") else alt.Axis(format="~s")


# Legends of lines go below the plot, one entry a line, so that at 390 px neither the plot
# nor a long run or series name is squeezed or cut.
BOTTOM_LEGEND = dict(orient="bottom", direction="vertical", labelLimit=320)
NO_CLIPS = "no clips"  # the title of a chart drawn from an empty split or view


def ema(values: Sequence[float], smoothing: float) -> np.ndarray:
    """Exponential moving average, TensorBoard-style, with bias correction at the start.

    `smoothing` in [0, 1): 0 returns the values unchanged, 0.9 is heavy smoothing. NaNs are skipped
    (they stay NaN and do not poison later points).
    """
    values = np.asarray(values, dtype=float)
    if smoothing <= 0 or len(values) == 0:
        return values
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if not np.isfinite(v):
            out[i] = np.nan
            continue
        acc = smoothing * acc + (1 - smoothing) * v
        weight = smoothing * weight + (1 - smoothing)
        out[i] = acc / weight
    return out


def _long(df: pd.DataFrame, x: str, columns: Mapping[str, str], smoothing: float) -> pd.DataFrame:
    """Melt `columns` ({column: label}) of `df` into run, x, series, value; EMA per run and series."""
    rows = []
    for run, part in df.sort_values(x).groupby("run", sort=False):
        for column, label in columns.items():
            if column not in part:
                continue
            rows.append(pd.DataFrame({
                "run": run,
                x: part[x].to_numpy(),
                "series": label,
                "value": ema(part[column].to_numpy(dtype=float), smoothing),
            }))
    if not rows:
        return pd.DataFrame(columns=["run", x, "series", "value"])
    return pd.concat(rows, ignore_index=True)


def run_scale(colors: Mapping[str, str] | None) -> alt.Scale:
    """The colour scale of run labels: each run's own colour (ui.colors) when given."""
    if colors:
        return alt.Scale(domain=list(colors), range=list(colors.values()))
    return alt.Scale(scheme="tableau10")


def _curves(long: pd.DataFrame, x: str, y_title: str, log_scale: bool, y_domain=None,
            colors: Mapping[str, str] | None = None) -> alt.Chart:
    if log_scale:
        long = long[long["value"] > 0]
        scale = alt.Scale(type="log", nice=False)
    else:
        scale = alt.Scale(zero=False, domain=y_domain) if y_domain else alt.Scale(zero=False)
    if colors:  # only the runs drawn here, in the legend
        colors = {label: colors[label] for label in dict.fromkeys(long["run"]) if label in colors}
    encodings = dict(  # colour = the run (its own colour on every page), dash = the series
        x=alt.X(f"{x}:Q", title=X_TITLES.get(x, x), axis=x_axis(x)),
        y=alt.Y("value:Q", title=y_title, scale=scale),
        color=alt.Color("run:N", title="run", scale=run_scale(colors), legend=alt.Legend(**BOTTOM_LEGEND)),
        tooltip=["run:N", "series:N", alt.Tooltip(f"{x}:Q", format=".4~g"), alt.Tooltip("value:Q", format=".4f")],
    )
    series = list(dict.fromkeys(long["series"]))
    if len(series) > 1:  # the legend names the line style too (its stroke symbols may not show)
        styles = list(zip(("solid", "dashed", "dotted"), ([1, 0], [6, 4], [2, 2])))[:len(series)]
        named = {name: f"{name} ({style})" for name, (style, _) in zip(series, styles)}
        long = long.assign(series=long["series"].map(named).fillna(long["series"]))
        encodings["strokeDash"] = alt.StrokeDash(
            "series:N", title=None, scale=alt.Scale(domain=list(named.values()), range=[d for _, d in styles]),
            legend=alt.Legend(orient="top", direction="vertical", labelLimit=320, symbolType="stroke",
                              symbolStrokeWidth=2))  # above the plot: beside the run legend it would be cut
    # Streamlit fits legends and axes into `height` too: 380 leaves the plot ~250 px with both legends
    return alt.Chart(long).mark_line(point=len(long) <= 60).encode(**encodings).properties(height=380)


def loss_curves(
    df: pd.DataFrame, *, x: str = "epoch", log_scale: bool = defaults.LOG_SCALE_LOSS, smoothing: float = 0.0,
    colors: Mapping[str, str] | None = None,
) -> alt.Chart:
    """Training and validation loss per epoch.

    df: one row per (run, epoch) with columns `run` (display name), `epoch` (1-based), `seconds`
    (wall-clock since the run started), `train_loss`, `val_loss` (either loss column may be absent).
    x: "epoch" or "seconds". log_scale: log y axis (non-positive values dropped).
    smoothing: EMA factor in [0, 1) applied per run and series.
    colors: run label -> colour (ui.colors), so that a run looks the same on every page.
    Colour = run, dash = train/val.
    """
    long = _long(df, x, {"train_loss": "train", "val_loss": "validation"}, smoothing)
    return _curves(long, x, "loss (log)" if log_scale else "loss", log_scale, colors=colors)


# legend labels of the per-epoch validation accuracies: in-collection, then the cross-collection views
VALIDATION_CURVES: dict[str, str] = {
    "val_accuracy": "validation accuracy",
    "val_shift_accuracy": "cross-collection validation",
    "val_source_accuracy": "cross-collection validation (source)",
    "val_program_accuracy": "cross-collection validation (program)",
}


def accuracy_curves(
    df: pd.DataFrame,
    *,
    x: str = "epoch",
    columns: Mapping[str, str] | None = None,
    smoothing: float = 0.0,
    colors: Mapping[str, str] | None = None,
) -> alt.Chart:
    """Accuracy per epoch, y in [0, 1].

    df: one row per (run, epoch) with `run`, `epoch`, `seconds` and accuracy columns.
    columns: {column: legend label}; default {"val_accuracy": "validation accuracy",
    "train_accuracy": "train accuracy", "val_balanced_accuracy": "validation balanced acc."},
    absent columns skipped. x and smoothing as in loss_curves.
    """
    columns = columns or {
        "val_accuracy": "validation accuracy",
        "train_accuracy": "train accuracy",
        "val_balanced_accuracy": "validation balanced acc.",
    }
    long = _long(df, x, columns, smoothing)
    return _curves(long, x, "accuracy", False, y_domain=[0, 1], colors=colors)


def step_loss_chart(
    losses: Sequence[float],
    *,
    steps_per_epoch: int | None = None,
    log_scale: bool = defaults.LOG_SCALE_LOSS,
    smoothing: float = 0.6,
    max_points: int = 2000,
    color: str | None = None,
) -> alt.Chart:
    """Training loss per optimiser step of one run: raw values faint, EMA on top.

    losses: one float per step, in order. steps_per_epoch: when given, x is fractional epochs.
    Long runs are thinned to about `max_points` points (every k-th step; EMA over all steps).
    color: the run's colour (ui.colors) for the smoothed line; the raw steps are drawn faint.
    """
    raw = np.asarray(losses, dtype=float)
    smooth = ema(raw, smoothing)
    step = np.arange(1, len(raw) + 1)
    keep = slice(None, None, max(1, len(raw) // max_points))
    x_values = step / steps_per_epoch if steps_per_epoch else step
    x_title = "epoch" if steps_per_epoch else "step"
    df = pd.DataFrame({"x": x_values[keep], "raw": raw[keep], "smoothed": smooth[keep]})
    long = df.melt("x", var_name="series", value_name="loss")
    if log_scale:
        long = long[long["loss"] > 0]
    scale = alt.Scale(type="log", nice=False) if log_scale else alt.Scale(zero=False)
    return (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("x:Q", title=x_title),
            y=alt.Y("loss:Q", title="train loss per step" + (" (log)" if log_scale else ""), scale=scale),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="top", direction="horizontal"),
                            scale=alt.Scale(domain=["raw", "smoothed"],
                                                                    range=[_faint(color or "#2f6db5"), color or "#2f6db5"])),
            tooltip=[alt.Tooltip("x:Q", title=x_title, format=".3~f"), "series:N", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(height=260)
    )


def _faint(color: str, amount: float = 0.6) -> str:
    """`color` ('#rrggbb') mixed with white by `amount` in [0, 1]."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(round(c + (255 - c) * amount) for c in (r, g, b)))


def confusion_heatmap(
    matrix: Sequence[Sequence[float]],
    class_names: Sequence[str] = SHORT_NAMES,
    *,
    normalize: bool = defaults.NORMALISE_CONFUSION,
    title: str = "",
    domain: tuple[float, float] | None = None,
) -> alt.Chart:
    """Confusion matrix: rows = actual class, columns = predicted class (engine.learn.metrics order).

    matrix: (classes, classes) counts. Cells show the count, or the row share in whole percent
    when `normalize` (short enough for a cell at 390 px; empty cells stay blank; the hover
    shows both); colour is the count, or the row-normalised share (recall along the diagonal)
    when `normalize`. domain: fixed colour domain, e.g. (0, 1) for normalised matrices or
    (0, max count over all matrices), so several heatmaps share one scale.
    """
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    names = list(class_names)
    rows = []
    for i, actual in enumerate(names):
        for j, predicted in enumerate(names):
            n = int(counts[i, j])
            rows.append({
                "actual": actual, "predicted": predicted, "count": n, "share": float(share[i, j]),
                "label": "" if n == 0 else (f"{100 * share[i, j]:.0f}" if normalize else str(n)),
                "fill": float(share[i, j]) if normalize else float(n),
            })
    df = pd.DataFrame(rows)
    top = domain[1] if domain else (1.0 if normalize else max(1.0, float(counts.max(initial=0))))
    lo = domain[0] if domain else 0.0
    scale = alt.Scale(scheme="blues", domain=[lo, top])
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", sort=names, title="predicted", axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y("actual:N", sort=names, title="actual", axis=alt.Axis(labelOverlap=False)),
    )
    rects = base.mark_rect().encode(
        color=alt.Color("fill:Q", scale=scale, title="% of row" if normalize else "clips",
                        legend=alt.Legend(format=".0%") if normalize else alt.Legend()),
        tooltip=["actual:N", "predicted:N", "count:Q", alt.Tooltip("share:Q", format=".1%", title="share of row")],
    )
    threshold = lo + 0.55 * (top - lo)
    text = base.mark_text(fontSize=10).encode(
        text="label:N",
        color=alt.condition(alt.datum.fill > threshold, alt.value("white"), alt.value("black")),
    )
    chart = (rects + text).properties(height=320)
    title = title if counts.sum() else f"{title} ({NO_CLIPS})" if title else NO_CLIPS
    return chart.properties(title=title) if title else chart


def per_class_bars(
    df: pd.DataFrame, *, group: str = "run", value: str = "accuracy", title: str = "", y_title: str | None = None,
    colors: Mapping[str, str] | None = None, legend_on_top: bool = False, height: int = 280,
) -> alt.Chart:
    """Grouped bars: one group per class, one bar per `group` value (run, or split).

    df: long format with columns `class` (name; order kept as first seen), `group` (default
    "run") and `value` (default "accuracy", a rate in [0, 1]; NaN/None bars are dropped); an
    optional `full name` column shows in the hover (the axis shows the short `class`).
    A bar of 0 is marked with a "0" at its foot, so that it reads as zero, not as missing.
    colors: group value -> colour (runs: ui.colors), else the Okabe-Ito palette.
    legend_on_top: a one-line legend above the plot (few short entries, e.g. the splits), which
    leaves the plot its height; else one entry a line below. height: the plot's own height.
    """
    df = df.dropna(subset=[value]) if value in df else pd.DataFrame(columns=["class", group, value])
    title = title or (NO_CLIPS if df.empty else "")
    order = list(dict.fromkeys(df["class"]))
    groups = list(dict.fromkeys(df[group]))
    is_rate = value.endswith("accuracy") or value in ("share", "recall", "f1")
    y_scale = alt.Scale(domain=[0, 1]) if is_rate else alt.Scale()
    legend = (alt.Legend(orient="top", direction="horizontal", title=None) if legend_on_top
              else alt.Legend(**BOTTOM_LEGEND))
    if colors:
        scale = run_scale({g: colors[g] for g in groups if g in colors})
    else:
        from ui.colors import OKABE_ITO

        scale = alt.Scale(domain=groups, range=list(OKABE_ITO[:len(groups)])) if groups else alt.Scale()
    tooltip = ["class:N", *(["full name:N"] if "full name" in df else []), f"{group}:N",
               alt.Tooltip(f"{value}:Q", format=".1%" if is_rate else ",")]
    base = alt.Chart(df).encode(
        x=alt.X("class:N", sort=order, title=None, axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
        xOffset=alt.XOffset(f"{group}:N", sort=groups),
        tooltip=tooltip,
    )
    bars = base.mark_bar().encode(
        y=alt.Y(f"{value}:Q", title=y_title or value.replace("_", " "), scale=y_scale,
                axis=alt.Axis(format="%") if is_rate else alt.Axis()),
        color=alt.Color(f"{group}:N", title=group, sort=groups, legend=legend, scale=scale),
    )
    zeros = base.transform_filter(alt.datum[value] == 0).mark_text(dy=-6, fontSize=10, color="#333").encode(
        y=alt.Y(f"{value}:Q"), text=alt.value("0"))
    chart = alt.layer(bars, zeros).properties(height=height)
    return chart.properties(title=title) if title else chart


def class_count_chart(counts: Mapping, *, share: bool = False) -> alt.Chart:
    """Clips per class.

    counts: {class: n} (one bar per class) or {subset: {class: n}} as MedleyDataset.counts()
    returns (grouped bars per subset). share: plot each subset's fraction instead of counts.
    The axis names each class by its short name (no "distorted electric ..." cut off); the
    hover gives the full name. The legend (the splits) sits on one line above the plot.
    """
    from engine.core.labels import short_name

    nested = counts and isinstance(next(iter(counts.values())), Mapping)
    table = counts if nested else {"clips": counts}
    rows = []
    for subset, per_class in table.items():
        total = sum(per_class.values()) or 1
        for name, n in per_class.items():
            rows.append({"class": short_name(name), "full name": name, "split": subset, "clips": int(n),
                         "share": n / total})
    df = pd.DataFrame(rows)
    value = "share" if share else "clips"
    return per_class_bars(df, group="split", value=value, y_title="share of split" if share else "clips",
                          legend_on_top=True, height=300)


def waveform_chart(y: np.ndarray, sr: int, *, points: int = 800) -> alt.Chart:
    """Waveform of a mono clip as a min/max envelope over `points` time bins.

    y: samples (float), sr: sample rate in Hz.
    """
    y = np.asarray(y, dtype=float)
    bins = max(1, min(points, len(y)))
    edges = np.linspace(0, len(y), bins + 1).astype(int)
    lo = np.array([y[a:b].min() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    hi = np.array([y[a:b].max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    df = pd.DataFrame({"time": edges[:-1] / sr, "min": lo, "max": hi})
    return (
        alt.Chart(df)
        .mark_area(color="#2f6db5", opacity=0.8)
        .encode(x=alt.X("time:Q", title="seconds"), y=alt.Y("min:Q", title="amplitude"), y2="max:Q")
        .properties(height=160)
    )


MEL_CHUNK_FRAMES = 1024  # frames per piece of a long recording's spectrogram (~8 MB of STFT at n_fft 2048)


def mel_step(samples: int, hop_length: int = 512, max_frames: int | None = None) -> int:
    """How many STFT frames mel_db averages into one column for a recording of `samples`."""
    frames = 1 + samples // hop_length
    return 1 if not max_frames or frames <= max_frames else int(np.ceil(frames / max_frames))


def mel_db(y: np.ndarray, sr: int = 22050, *, n_mels: int = 128, hop_length: int = 512,
           max_frames: int | None = None) -> np.ndarray:
    """Mel spectrogram of mono `y` in dB relative to its loudest bin: (n_mels, columns), n_fft 2048.

    Each column is the mean power of `mel_step(len(y), hop_length, max_frames)` consecutive
    frames (1: every frame), and a long recording is computed in pieces of MEL_CHUNK_FRAMES
    frames, so memory stays bounded (about 15 MB) whatever its length. The picture data for
    matrix_heatmap; a silent clip gives a flat picture, not an error.
    """
    import librosa

    n_fft = 2048
    step = mel_step(len(y), hop_length, max_frames)
    frames = 1 + len(y) // hop_length
    if step == 1 and frames <= MEL_CHUNK_FRAMES:
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    else:
        chunk = max(step, MEL_CHUNK_FRAMES // step * step)  # frames per piece: a multiple of step
        columns = []
        for first in range(0, frames, chunk):
            count = min(chunk, frames - first)
            start = first * hop_length - n_fft // 2  # frame f is centred on sample f * hop (center=True)
            stop = start + (count - 1) * hop_length + n_fft
            piece = np.zeros(stop - start, dtype=np.float32)  # zeros beyond the ends, as center=True pads
            piece[max(0, -start):max(0, -start) + len(y[max(0, start):stop])] = y[max(0, start):stop]
            power = librosa.feature.melspectrogram(y=piece, sr=sr, n_fft=n_fft, hop_length=hop_length,
                                                   n_mels=n_mels, center=False)  # (n_mels, count)
            groups = -(-power.shape[1] // step)
            power = np.pad(power, ((0, 0), (0, groups * step - power.shape[1])), mode="edge")
            columns.append(power.reshape(n_mels, groups, step).mean(axis=2))
        mel = np.concatenate(columns, axis=1)
    return librosa.power_to_db(mel, ref=float(mel.max()) if mel.max() > 0 else 1.0)


def matrix_heatmap(
    matrix: np.ndarray,
    *,
    frame_seconds: float | None = None,
    row_labels: Sequence[str] | None = None,
    row_title: str = "bin",
    color_title: str = "value",
    max_frames: int = 200,
    scheme: str = "magma",
) -> alt.Chart:
    """Heatmap of a (rows, frames) matrix: a (mel) spectrogram in dB or a feature matrix.

    frame_seconds: seconds per frame (x axis in seconds) or None (x = frame index).
    row_labels: names of the rows (e.g. feature names; shown top to bottom) or None (row index,
    low at the bottom, as in a spectrogram). Frames are averaged down to at most `max_frames`.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        m = np.zeros((1, 1))
    rows, frames = m.shape
    factor = int(np.ceil(frames / max_frames)) if frames > max_frames else 1
    if factor > 1:
        pad = (-frames) % factor
        padded = np.pad(m, ((0, 0), (0, pad)), mode="edge")
        m = padded.reshape(rows, -1, factor).mean(axis=2)
    cols = m.shape[1]
    step = (frame_seconds or 1.0) * factor
    x_title = "seconds" if frame_seconds else "frame"
    labels = list(row_labels) if row_labels is not None else [str(i) for i in range(rows)]
    r_idx, c_idx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    df = pd.DataFrame({
        "row": np.array(labels)[r_idx.ravel()],
        "row_index": r_idx.ravel(),
        "x": c_idx.ravel() * step,
        "x2": (c_idx.ravel() + 1) * step,
        "value": m.ravel(),
    })
    # the time axis ends where the data ends (a "nice" scale ran past the clip's last frame)
    x = alt.X("x:Q", title=x_title, scale=alt.Scale(domain=[0, cols * step], nice=False, zero=False),
              axis=alt.Axis(grid=False))
    if row_labels is not None:  # one row a label: 16 px each, so that 21 feature names never overlap
        y = alt.Y("row:N", sort=labels, title=row_title, axis=alt.Axis(labelOverlap=False, labelFontSize=10, grid=False))
        return (
            alt.Chart(df)
            .mark_rect()
            .encode(x=x, x2="x2:Q", y=y,
                    color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme), title=color_title),
                    tooltip=["row:N", alt.Tooltip("x:Q", title=x_title, format=".3~f"), alt.Tooltip("value:Q", format=".3~f")])
            .properties(height=alt.Step(16))
        )
    df["row2"] = df["row_index"] + 1
    return (
        alt.Chart(df)
        .mark_rect()
        .encode(x=x, x2="x2:Q",
                y=alt.Y("row_index:Q", title=row_title, scale=alt.Scale(domain=[0, rows], nice=False),
                        axis=alt.Axis(grid=False)), y2="row2:Q",
                color=alt.Color("value:Q", scale=alt.Scale(scheme=scheme), title=color_title),
                tooltip=[alt.Tooltip("row_index:Q", title=row_title), alt.Tooltip("x:Q", title=x_title, format=".3~f"),
                         alt.Tooltip("value:Q", format=".3~f")])
        .properties(height=220)
    )


def feature_boxplot(df: pd.DataFrame, *, feature: str, order: Iterable[str] | None = None) -> alt.Chart:
    """Box plot of one per-clip value per class.

    df: one row per clip with columns `class` and `feature` (a number, e.g. mean MFCC 1).
    order: class order on the x axis (default: first seen).
    """
    order = list(order) if order is not None else list(dict.fromkeys(df["class"]))
    return (
        alt.Chart(df)
        .mark_boxplot(extent="min-max")
        .encode(
            x=alt.X("class:N", sort=order, title=None, axis=alt.Axis(labelAngle=-30)),
            y=alt.Y(f"{feature}:Q", title=feature, scale=alt.Scale(zero=False)),
            color=alt.Color("class:N", sort=order, legend=None),
        )
        .properties(height=260)
    )
