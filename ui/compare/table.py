"""The runs table: one row per run (metrics, gap, every parameter), its filters and sort order,
the selection kept in the URL, and the parameters that differ between runs. No streamlit here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from engine.core.config import RunConfig
from ui import defaults
from ui.compare.values import (
    BASE_COLUMNS, KEY_PARAMS, METRIC_COLUMNS, METRICS, metric, partial_epochs, run_labels, value_label,
)


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
SORT_COLUMNS: tuple[str, ...] = (defaults.RANK_COLUMN, *(c for c in ("val acc", "cross-val acc", "cross-val source acc", "cross-val program acc", "created", "test acc", "test balanced acc", "test macro-F1", "val-test gap") if c != defaults.RANK_COLUMN))


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


# The metrics that choose (validation, then the cross-collection view the protocol chooses on)
# and report (test): right after the name, so that a phone's first screen of the table (about
# three columns at 390 px) answers "which run is best"; the other metrics follow the parameters.
HEADLINE_METRICS: tuple[str, ...] = ("val acc", "cross-val source acc", "test acc")
PROGRAM_HEADLINE: tuple[str, ...] = ("val acc", "cross-val program acc", "test acc")  # demo data: see headline_metrics


def headline_metrics(df: pd.DataFrame) -> tuple[str, ...]:
    """The headline columns for the listed runs: the cross-collection view is the one
    `engine.compare.ablation.protocol_split` chooses on, cross-val program when every finished run
    has it (the demo), else cross-val source (the real dataset has no held-out programs)."""
    column = "cross-val program acc"
    finished = df[df["status"] == "finished"] if "status" in df else df
    if column in finished and len(finished) and finished[column].notna().all():
        return PROGRAM_HEADLINE
    return HEADLINE_METRICS


def table_columns(df: pd.DataFrame) -> list[str]:
    """Columns of the runs table as shown: name and status, the `headline_metrics`, then the rest
    of the base columns, the key parameters, any other parameter whose value differs between
    the listed runs, the other metrics, and the id."""
    headline = headline_metrics(df)
    varying = [p for p in param_names() if p not in KEY_PARAMS and p in df and df[p].map(value_label).nunique() > 1]
    warned = ["warning"] if "warning" in df and (df["warning"].fillna("") != "").any() else []
    other_metrics = [m for m in METRIC_COLUMNS if m not in headline]
    return ["name", "status", *headline, *warned, "tags", "created", "epochs", "partial", *KEY_PARAMS,
            *varying, *other_metrics, "id"]


def resolve_runs(values: Iterable[str], labels: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """URL values naming runs -> (run ids, in order without repeats; values that name no run).

    `labels` maps run id -> the label a URL-bound widget writes. A value is a run's label, its
    id, a text holding its id (a label written before a rename), or an old link's comma-
    separated list of those ("id1,id2")."""
    by_label = {label: run_id for run_id, label in labels.items()}

    def exact(text: str) -> str | None:
        return by_label.get(text) or (text if text in labels else None)

    def loose(text: str) -> str | None:
        return exact(text) or next((run_id for run_id in labels if run_id in text), None)

    found: list[str] = []
    missing: list[str] = []
    for value in values:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if exact(value.strip()) or not all(loose(p) for p in parts):
            parts = [value.strip()]  # one label (commas and all), or a value naming no run
        for part in filter(None, parts):
            run_id = loose(part)
            if run_id is None:
                if part not in missing:
                    missing.append(part)
            elif run_id not in found:
                found.append(run_id)
    return found, missing


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
