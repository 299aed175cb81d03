"""Per-class accuracy, our study runs beside the study's reported numbers, and the
validation-test gap. No streamlit here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from engine.core.config import RunConfig
from engine.core.labels import SHORT_NAMES, short_names_of
from engine.compare.stats import generalisation_gap
from ui.compare.values import metric


def per_class_frame(runs: Sequence[Any], labels: Mapping[str, str], split: str,
                    class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Long frame class, run, accuracy (recall of that class in `split`; NaN where absent).
    Classes: `class_names`, else each run's own (engine.core.labels.short_names_of)."""
    rows = []
    for run in runs:
        per_class = ((run.metrics or {}).get(split) or {}).get("per_class_accuracy") or []
        for k, name in enumerate(class_names if class_names is not None else short_names_of(run)):
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
    (engine.compare.stats.generalisation_gap), largest per-class gap and its class."""
    rows = []
    for run in runs:
        try:
            gap = generalisation_gap(run.metrics)
        except Exception:  # unfinished or diverged run: nothing to show
            continue
        names = short_names_of(run)
        per_class = [(g, names[k]) for k, g in enumerate(gap["per_class_gap"]) if g is not None and k < len(names)]
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
