"""Helpers of the Compare page: plain data in (run records, metrics, predictions), DataFrames
and Altair charts out. No streamlit in here, so every function is unit-testable.

Run records are `engine.store.RunRecord`s (anything with id, name, tags, status, created,
config (RunConfig), group_key, metrics, history works).

- runs_frame(runs)                         one row per run: metrics, val-test gap, every parameter
- filter_runs(df, statuses, tag, param, values)
- param_diff(runs, labels)                 only the parameters that differ between runs
- parse_run_ids / encode_run_ids           the `runs` URL query parameter
- parse_values(text, example), build_grid  the ablation builder
- history_frame(runs, labels=None)         per-epoch rows for ui.charts.loss_curves / accuracy_curves
- group_bands(runs, labels, key)           mean / std / min / max per epoch of seed groups
- smooth_bands, band_chart(bands, ...)     mean line with a band per seed group
- confusion_domain, confusion_difference_chart
- per_class_frame, study_frame, gap_frame, gap_per_class_frame, mistakes_frame
- param_metric_chart, parallel_coordinates_chart
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.labels import SHORT_NAMES
from engine.stats import AGGREGATE_COLUMNS, aggregate_histories, confusion_difference, generalisation_gap, mean_std

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
# Table column -> (split, key of engine.metrics.evaluate()).
METRICS: dict[str, tuple[str, str]] = {
    "val acc": ("validation", "accuracy"),
    "cross-val acc": ("validation_shift", "accuracy"),  # validation clips through the held-out recording chain
    "cross-val source acc": ("validation_source", "accuracy"),  # ... through the held-out source change, then that chain
    "test acc": ("test", "accuracy"),
    "test balanced acc": ("test", "balanced_accuracy"),
    "test macro-F1": ("test", "macro_f1"),
}
METRIC_COLUMNS: tuple[str, ...] = (*METRICS, "val-test gap")
BASE_COLUMNS: tuple[str, ...] = ("id", "name", "status", "tags", "created", "epochs", "partial")


# --------------------------------------------------------------------------- values and labels


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


# --------------------------------------------------------------------------- the runs table


def runs_frame(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per run: id, name, status, tags (list), created (datetime), epochs, group,
    the METRIC_COLUMNS (rates in [0, 1], None when missing) and one column per parameter
    (dotted names, `RunConfig.flat()`). Reads only the rows: no predictions, no step losses."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "id": run.id,
            "name": run.name,
            "status": run.status,
            "tags": list(run.tags),
            "created": datetime.fromtimestamp(run.created),
            "epochs": len(run.history or []),
            "partial": partial_epochs(run) is not None,
            "group": run.group_key,
            "warning": getattr(run, "warning", None) or "",
        }
        for column, (split, key) in METRICS.items():
            row[column] = metric(run, split, key)
        val, test = row["val acc"], row["test acc"]
        row["val-test gap"] = None if val is None or test is None else val - test
        row.update(run.config.flat())
        rows.append(row)
    columns = [*BASE_COLUMNS, "group", "warning", *METRIC_COLUMNS, *RunConfig().flat()]
    df = pd.DataFrame(rows, columns=columns)
    for column in METRIC_COLUMNS:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    return df


def param_names() -> list[str]:
    """Every configuration parameter by dotted name (the param pickers' options)."""
    return list(RunConfig().flat())


def param_values(df: pd.DataFrame, param: str) -> list[str]:
    """The distinct values of a parameter column as labels, sorted (numbers numerically)."""
    if param not in df or df.empty:
        return []
    values = {value_label(v): v for v in df[param].tolist()}

    def order(label: str) -> tuple:
        v = values[label]
        return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, label)

    return sorted(values, key=order)


def filter_runs(
    df: pd.DataFrame,
    statuses: Iterable[str] | None = None,
    tag: str | None = None,
    param: str | None = None,
    values: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Rows of `df` (from runs_frame) kept by every filter given; an empty/None filter keeps all.

    statuses: allowed statuses; tag: a tag the run must carry; param + values: the run's
    value of `param`, as value_label() writes it, must be one of `values`."""
    keep = pd.Series(True, index=df.index)
    statuses = list(statuses or [])
    if statuses:
        keep &= df["status"].isin(statuses)
    if tag:
        keep &= df["tags"].map(lambda tags: tag in tags)
    values = list(values or [])
    if param and values and param in df:
        keep &= df[param].map(value_label).isin(values)
    return df[keep]


# Sort keys of the runs table, validation first: validation chooses, test reports.
SORT_COLUMNS: tuple[str, ...] = ("val acc", "cross-val acc", "cross-val source acc", "created", "test acc", "test balanced acc", "test macro-F1", "val-test gap")


def is_test_metric(column: str) -> bool:
    """True for a column measured on the test split (choosing by it selects on test)."""
    return column in METRICS and METRICS[column][0] == "test" or column == "val-test gap"


def sort_runs(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows of `df` best first by `column`: highest metric (lowest for the val-test gap), newest
    run for "created"; runs without a value last, ties in the given order."""
    if column not in df or df.empty:
        return df
    ascending = column == "val-test gap"
    return df.sort_values(column, ascending=ascending, na_position="last", kind="stable")


def all_tags(df: pd.DataFrame) -> list[str]:
    """Every tag used by a run, sorted."""
    return sorted({tag for tags in df["tags"] for tag in tags}) if len(df) else []


def table_columns(df: pd.DataFrame) -> list[str]:
    """Columns of the runs table as shown: base, key parameters, metrics, and any other
    parameter whose value differs between the listed runs."""
    varying = [p for p in param_names() if p not in KEY_PARAMS and p in df and df[p].map(value_label).nunique() > 1]
    warned = ["warning"] if "warning" in df and (df["warning"].fillna("") != "").any() else []
    return ["name", "status", *warned, "tags", "created", "epochs", "partial", *KEY_PARAMS, *varying, *METRIC_COLUMNS,
            "id"]


# --------------------------------------------------------------------------- selection in the URL


def parse_run_ids(text: str | None, known: Iterable[str]) -> tuple[list[str], list[str]]:
    """The `runs` query parameter ("id1,id2") -> (ids that exist, in order without repeats;
    ids that are unknown)."""
    known = set(known)
    found: list[str] = []
    missing: list[str] = []
    for part in (text or "").split(","):
        run_id = part.strip()
        if not run_id or run_id in found or run_id in missing:
            continue
        (found if run_id in known else missing).append(run_id)
    return found, missing


def encode_run_ids(ids: Iterable[str]) -> str:
    """Ids -> the `runs` query parameter value."""
    return ",".join(ids)


# --------------------------------------------------------------------------- parameter differences


def param_diff(runs: Sequence[Any], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Parameters (rows, dotted names) whose value differs between the runs (columns, labelled);
    values shown as value_label() writes them. Empty frame when all runs agree."""
    labels = labels or run_labels(runs)
    flats = {labels[run.id]: run.config.flat() for run in runs}
    if not flats:
        return pd.DataFrame()
    params = list(next(iter(flats.values())))
    differing = [p for p in params if len({value_label(flat.get(p)) for flat in flats.values()}) > 1]
    table = pd.DataFrame(
        {label: [value_label(flat.get(p)) for p in differing] for label, flat in flats.items()}, index=differing
    )
    table.index.name = "parameter"
    return table


# --------------------------------------------------------------------------- the ablation builder


def parse_values(text: str, example: Any) -> list[Any]:
    """Comma-separated values typed for a parameter whose current value is `example`:
    "1e-3, 1e-4" -> [0.001, 0.0001]. 'None' means None; booleans accept true/false/yes/no/1/0.
    Raises ConfigError naming a value that does not fit."""
    out: list[Any] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        lower = token.lower()
        try:
            if lower in ("none", "null", "whole"):
                value: Any = None
            elif isinstance(example, bool):
                if lower not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError(token)
                value = lower in ("true", "yes", "1", "on")
            elif isinstance(example, int):
                number = float(token)
                if not number.is_integer():
                    raise ValueError(token)
                value = int(number)
            elif isinstance(example, float):
                value = float(token)
            elif isinstance(example, str):
                value = token
            else:  # example None (e.g. grad_clip, frames=None): a number if it looks like one
                number = float(token)
                value = int(number) if number.is_integer() and "." not in token and "e" not in lower else number
        except ValueError:
            kind = type(example).__name__ if example is not None else "number"
            raise ConfigError(f"{token!r} is not a valid {kind} value") from None
        if value not in out:
            out.append(value)
    return out


def build_grid(base: RunConfig, grid: Mapping[str, Sequence[Any]]) -> list[RunConfig]:
    """Every combination of the values in `grid` ({dotted param: [values]}) applied to `base`.
    Raises ConfigError when a combination is not a valid configuration."""
    params = [p for p, values in grid.items() if values]
    if not params:
        return [base]
    return [base.with_values(**dict(zip(params, combo))) for combo in itertools.product(*(grid[p] for p in params))]


# --------------------------------------------------------------------------- curves


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
    """Per group and epoch: mean, std, min, max, n of history `key` (engine.stats.aggregate_histories),
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
               log_scale: bool = False, colors: Mapping[str, str] | None = None) -> alt.Chart:
    """Mean line per group with a shaded band: mean ± std (`band="std"`) or min..max (`band="minmax"`).
    colors: group label -> colour (a seed group takes its first run's colour, ui.colors)."""
    lo, hi = ("lo", "hi") if band == "std" else ("min", "max")
    df = bands.copy()
    if log_scale:
        df = df[(df["mean"] > 0)]
        df[lo] = df[lo].clip(lower=df["mean"].min() / 10 if len(df) else 1e-6)
    scale = alt.Scale(type="log") if log_scale else alt.Scale(zero=False)
    base = alt.Chart(df).encode(
        x=alt.X(f"{x}:Q", title="wall-clock seconds" if x == "seconds" else "epoch"),
        color=alt.Color("group:N", title="seed group", scale=alt.Scale(domain=list(colors), range=list(colors.values()))
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
            row[column] = "" if n == 0 else f"{mean:.1%} ± {std:.1%}"
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- confusion matrices


def confusion_matrix_of(run: Any, split: str) -> np.ndarray | None:
    """The (8, 8) confusion counts of a run's split, None when it has none."""
    conf = ((run.metrics or {}).get(split) or {}).get("confusion")
    return None if conf is None else np.asarray(conf, dtype=float)


def mean_confusion(runs: Sequence[Any], split: str) -> np.ndarray | None:
    """The mean confusion matrix of several runs (a seed group), None when none has one."""
    matrices = [m for m in (confusion_matrix_of(run, split) for run in runs) if m is not None]
    return np.mean(matrices, axis=0) if matrices else None


def confusion_domain(matrices: Iterable[np.ndarray], normalize: bool) -> tuple[float, float]:
    """One colour domain for several heatmaps: (0, 1) for row shares, (0, max count) for counts."""
    if normalize:
        return (0.0, 1.0)
    top = max((float(np.max(m)) for m in matrices if m is not None and np.size(m)), default=1.0)
    return (0.0, max(1.0, top))


def row_normalise(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (rows without clips stay 0)."""
    m = np.asarray(matrix, dtype=float)
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)


def confusion_difference_frame(a: np.ndarray, b: np.ndarray, normalize: bool = False,
                               class_names: Sequence[str] = SHORT_NAMES) -> pd.DataFrame:
    """One row per cell: actual, predicted, a, b, diff (= B - A), effect (+ where B is better:
    more right on the diagonal or fewer of that confusion off it), verdict (fixed/broke/same)."""
    if normalize:
        a, b = row_normalise(a), row_normalise(b)
    diff = np.asarray(confusion_difference(a, b), dtype=float)
    rows = []
    for i, actual in enumerate(class_names):
        for j, predicted in enumerate(class_names):
            d = float(diff[i, j])
            effect = d if i == j else -d
            rows.append({
                "actual": actual, "predicted": predicted, "a": float(a[i, j]), "b": float(b[i, j]), "diff": d,
                "effect": effect, "verdict": "same" if abs(d) < 1e-12 else ("fixed" if effect > 0 else "broke"),
            })
    return pd.DataFrame(rows)


def confusion_difference_chart(df: pd.DataFrame, *, normalize: bool = False, name_a: str = "A",
                               name_b: str = "B", class_names: Sequence[str] = SHORT_NAMES) -> alt.Chart:
    """Heatmap of B - A: cell text is the signed change; colour says whether it helped B
    (blue: fixed; red: broke) on a symmetric scale around 0."""
    names = list(class_names)
    top = max(float(df["effect"].abs().max()) if len(df) else 0.0, 1e-9)
    fmt = "+.0%" if normalize else "+.0f"
    df = df.assign(label=[("" if abs(d) < 1e-12 else format(d, fmt)) for d in df["diff"]])
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", sort=names, title="predicted", axis=alt.Axis(labelAngle=-40)),
        y=alt.Y("actual:N", sort=names, title="actual"),
    )
    rects = base.mark_rect().encode(
        color=alt.Color("effect:Q", scale=alt.Scale(scheme="redblue", domain=[-top, top]),
                        title=f"better for {name_b}"),
        tooltip=["actual:N", "predicted:N", alt.Tooltip("a:Q", title=name_a, format=".3~f"),
                 alt.Tooltip("b:Q", title=name_b, format=".3~f"), alt.Tooltip("diff:Q", title="B - A", format="+.3~f"),
                 "verdict:N"],
    )
    text = base.mark_text(fontSize=11).encode(text="label:N")
    return (rects + text).properties(height=320, title=f"{name_b} - {name_a}")


# --------------------------------------------------------------------------- per class, study, gap


def per_class_frame(runs: Sequence[Any], labels: Mapping[str, str], split: str,
                    class_names: Sequence[str] = SHORT_NAMES) -> pd.DataFrame:
    """Long frame class, run, accuracy (recall of that class in `split`; NaN where absent)."""
    rows = []
    for run in runs:
        per_class = ((run.metrics or {}).get(split) or {}).get("per_class_accuracy") or []
        for k, name in enumerate(class_names):
            value = per_class[k] if k < len(per_class) else None
            rows.append({"class": name, "run": labels[run.id], "accuracy": np.nan if value is None else float(value)})
    return pd.DataFrame(rows, columns=["class", "run", "accuracy"])


def study_row(config: RunConfig, changes: Mapping[str, Mapping[str, Any]], base: RunConfig) -> str | None:
    """Name of the ablation row whose changes turn `base` into `config`, ignoring data,
    seed, epochs (those may be set for every row) and which librosa's inputs were reproduced
    (runs made before the study presets used the 2019 inputs are still study rows); None when
    no row matches."""
    ignore = {"data", "train.seed", "train.epochs", "features.inputs"}
    flat = {k: v for k, v in config.flat().items() if k not in ignore}
    for name, change in changes.items():
        row = {k: v for k, v in base.with_values(**change).flat().items() if k not in ignore}
        if row == flat:
            return name
    return None


def study_frame(runs: Sequence[Any], labels: Mapping[str, str], reported: Mapping[str, float | None],
                changes: Mapping[str, Mapping[str, Any]], base: RunConfig,
                final_row: str | None = None, final_test: float | None = None) -> pd.DataFrame:
    """Our runs tagged "study" beside the study's reported validation accuracy: row, run,
    our val acc, study val acc, our test acc, study test acc (the final row's test only).
    Runs match a row by configuration (see study_row), else by name."""
    rows = []
    for run in runs:
        if "study" not in run.tags:
            continue
        row = study_row(run.config, changes, base) or next((n for n in reported if run.name.endswith(n)), None)
        if row is None:
            continue
        rows.append({
            "study row": row,
            "run": labels[run.id],
            "our val acc": metric(run, "validation", "accuracy"),
            "study val acc": reported.get(row),
            "our test acc": metric(run, "test", "accuracy"),
            "study test acc": final_test if row == final_row else None,
        })
    order = {name: k for k, name in enumerate(reported)}
    df = pd.DataFrame(rows, columns=["study row", "run", "our val acc", "study val acc", "our test acc", "study test acc"])
    return df.sort_values("study row", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def gap_frame(runs: Sequence[Any], labels: Mapping[str, str]) -> pd.DataFrame:
    """Every run with both evaluations: run, val acc, test acc, gap, balanced gap
    (engine.stats.generalisation_gap), largest per-class gap and its class."""
    rows = []
    for run in runs:
        try:
            gap = generalisation_gap(run.metrics)
        except Exception:  # unfinished or diverged run: nothing to show
            continue
        per_class = [(g, SHORT_NAMES[k]) for k, g in enumerate(gap["per_class_gap"]) if g is not None and k < len(SHORT_NAMES)]
        worst = max(per_class, default=(None, None))
        rows.append({
            "run": labels[run.id], "id": run.id, "val acc": gap["validation_accuracy"], "test acc": gap["test_accuracy"],
            "gap": gap["accuracy_gap"], "balanced gap": gap["balanced_accuracy_gap"],
            "largest class gap": worst[0], "class": worst[1],
        })
    return pd.DataFrame(rows, columns=["run", "id", "val acc", "test acc", "gap", "balanced gap", "largest class gap", "class"])


def gap_per_class_frame(run: Any, class_names: Sequence[str] = SHORT_NAMES) -> pd.DataFrame:
    """One run's per-class accuracy on validation and test, and their gap: class, validation, test, gap."""
    gap = generalisation_gap(run.metrics)
    val = run.metrics["validation"].get("per_class_accuracy") or []
    test = run.metrics["test"].get("per_class_accuracy") or []
    rows = []
    for k, name in enumerate(class_names):
        rows.append({
            "class": name,
            "validation": val[k] if k < len(val) else None,
            "test": test[k] if k < len(test) else None,
            "gap": gap["per_class_gap"][k] if k < len(gap["per_class_gap"]) else None,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- mistakes


def largest_mistake(confusion: Sequence[Sequence[float]] | None) -> tuple[int, int] | None:
    """(actual, predicted) of the largest off-diagonal cell of a confusion matrix (rows =
    actual), the first such cell on ties; None when there is no mistake at all."""
    if confusion is None:
        return None
    m = np.asarray(confusion, dtype=float)
    if m.ndim != 2 or m.size == 0:
        return None
    off = m.copy()
    np.fill_diagonal(off, -np.inf)
    actual, predicted = np.unravel_index(int(np.argmax(off)), off.shape)
    return (int(actual), int(predicted)) if off[actual, predicted] > 0 else None


def mistakes_frame(pred: Mapping[str, Any], actual: int, predicted: int, limit: int | None = None,
                   class_names: Sequence[str] = SHORT_NAMES) -> pd.DataFrame:
    """Clips of one split's predictions ({"ids", "y", "probs"}) whose label is `actual` and whose
    argmax is `predicted`, most confident first: uuid, p(actual), p(predicted), top 3 guesses."""
    columns = ["uuid", f"p({class_names[actual]})", f"p({class_names[predicted]})", "top 3"]
    probs = np.asarray(pred.get("probs") or [], dtype=float)
    y = np.asarray(pred.get("y") or [], dtype=np.int64)
    if probs.ndim != 2 or len(y) == 0:
        return pd.DataFrame(columns=columns)
    rows_idx = np.flatnonzero((y == actual) & (probs.argmax(axis=1) == predicted))
    rows_idx = rows_idx[np.argsort(-probs[rows_idx, predicted], kind="stable")]
    if limit is not None:
        rows_idx = rows_idx[:limit]
    rows = []
    for i in rows_idx:
        top = np.argsort(-probs[i])[:3]
        rows.append([
            str(pred["ids"][i]), float(probs[i, actual]), float(probs[i, predicted]),
            ", ".join(f"{class_names[k]} {probs[i, k]:.0%}" for k in top),
        ])
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- hyperparameter vs metric


def _numeric(series: pd.Series) -> bool:
    values = [v for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def param_metric_chart(df: pd.DataFrame, param: str, metric_column: str) -> alt.Chart:
    """Scatter of a metric against one parameter over the runs of `df` (runs_frame rows):
    a numeric parameter on a quantitative axis (log when its values span >= 2 decades),
    anything else as categories."""
    data = df[["name", "status", param, metric_column]].dropna(subset=[metric_column]).copy()
    data["value"] = data[param].map(value_label)
    if _numeric(data[param]):
        data["x"] = pd.to_numeric(data[param], errors="coerce")
        positive = data["x"].dropna()
        log = bool(len(positive)) and (positive > 0).all() and positive.max() / positive.min() >= 100
        x = alt.X("x:Q", title=param, scale=alt.Scale(type="log") if log else alt.Scale(zero=False))
    else:
        x = alt.X("value:N", title=param, sort=param_values(df, param))
    return (
        alt.Chart(data)
        .mark_circle(size=80, opacity=0.7)
        .encode(
            x=x,
            y=alt.Y(f"{metric_column}:Q", title=metric_column, axis=alt.Axis(format="%")),
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
