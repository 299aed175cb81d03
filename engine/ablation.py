"""Ablation tables: the runs of each row (one per seed) reduced to mean and seed spread.

Used by `python -m engine ablate` and the home page. Metrics per run come from the store's
`metrics` dict: validation (in-collection), validation_shift (cross-collection: validation
clips through the held-out recording chain) and test.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

# column -> (split, metric)
TABLE_METRICS: dict[str, tuple[str, str]] = {
    "val_accuracy": ("validation", "accuracy"),
    "val_shift_accuracy": ("validation_shift", "accuracy"),
    "test_accuracy": ("test", "accuracy"),
    "test_balanced_accuracy": ("test", "balanced_accuracy"),
}


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1; None with fewer than 2 values) of finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))


def summarize_rows(rows: Sequence[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """[(row name, [run records of that row, one per seed])] -> one dict per row, in order:
    {"row", "runs", "finished", "seeds", "<metric>_mean", "<metric>_std", "gap_mean"} for each
    TABLE_METRICS column; only finished runs count. `gap_mean` = val accuracy - test accuracy."""
    table = []
    for name, records in rows:
        done = [r for r in records if r.status == "finished"]
        row: dict[str, Any] = {"row": name, "runs": [r.id for r in records], "finished": len(done),
                               "seeds": [r.config.train.seed for r in done]}
        for column, (split, metric) in TABLE_METRICS.items():
            mean, std = mean_std([((r.metrics or {}).get(split) or {}).get(metric) for r in done])
            row[f"{column}_mean"], row[f"{column}_std"] = mean, std
        val, test = row["val_accuracy_mean"], row["test_accuracy_mean"]
        row["gap_mean"] = None if val is None or test is None else val - test
        table.append(row)
    return table


def format_rows(table: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table: mean +- seed std in percent."""
    def cell(row: dict, column: str) -> str:
        mean, std = row.get(f"{column}_mean"), row.get(f"{column}_std")
        if mean is None:
            return "-".rjust(13)
        return (f"{100 * mean:5.1f}" + (f" +- {100 * std:4.1f}" if std is not None else "        ")).rjust(13)

    head = (f"{'configuration':<26} {'seeds':>5} {'val':>13} {'cross-val':>13} {'test':>13} "
            f"{'test bal.':>13} {'val-test':>8}")
    lines = [head]
    for row in table:
        gap = "-" if row["gap_mean"] is None else f"{100 * row['gap_mean']:.1f}"
        lines.append(f"{row['row']:<26} {row['finished']:>5} {cell(row, 'val_accuracy')} "
                     f"{cell(row, 'val_shift_accuracy')} {cell(row, 'test_accuracy')} "
                     f"{cell(row, 'test_balanced_accuracy')} {gap:>8}")
    return "\n".join(lines)


def select_by_cross_validation(table: list[dict[str, Any]], margin: float = 0.0) -> str | None:
    """The protocol's choice (docs/PROTOCOL.md): the row with the highest mean cross-collection
    validation accuracy; a row replaces the first row (the current recommendation) only when
    its mean beats it by more than `margin` AND by more than the larger of the two seed
    standard deviations. Never reads test. None when no row has the metric."""
    scored = [r for r in table if r.get("val_shift_accuracy_mean") is not None]
    if not scored:
        return None
    base = table[0] if table and table[0].get("val_shift_accuracy_mean") is not None else scored[0]
    best = max(scored, key=lambda r: r["val_shift_accuracy_mean"])
    spread = max(best.get("val_shift_accuracy_std") or 0.0, base.get("val_shift_accuracy_std") or 0.0)
    gain = best["val_shift_accuracy_mean"] - base["val_shift_accuracy_mean"]
    return best["row"] if best is not base and gain > max(margin, spread) else base["row"]
