"""Ablation tables: the runs of each row (one per seed) reduced to mean and seed spread.

Used by `python -m engine ablate` and the home page. Metrics per run come from the store's
`metrics` dict: validation (in-collection), validation_shift (cross-collection, channel: the
validation clips through the held-out recording chain), validation_source (cross-collection,
source: the validation clips through the held-out source change, then that chain),
validation_program (cross-collection, program: demo songs of GM programs training never plays;
absent on the real dataset) and test.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..data.dataset import PROGRAM_VIEW_MISSING
from ..core.errors import ConfigError
from .stats import against_reference, compare_family

# column -> (split, metric)
TABLE_METRICS: dict[str, tuple[str, str]] = {
    "val_accuracy": ("validation", "accuracy"),
    "val_shift_accuracy": ("validation_shift", "accuracy"),
    "val_source_accuracy": ("validation_source", "accuracy"),
    "val_program_accuracy": ("validation_program", "accuracy"),
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

    head = (f"{'configuration':<26} {'seeds':>5} {'val':>13} {'cross-val':>13} {'cross-val src':>13} "
            f"{'cross-val prog':>14} {'test':>13} {'test bal.':>13} {'val-test':>8}")
    lines = [head]
    for row in table:
        gap = "-" if row["gap_mean"] is None else f"{100 * row['gap_mean']:.1f}"
        lines.append(f"{row['row']:<26} {row['finished']:>5} {cell(row, 'val_accuracy')} "
                     f"{cell(row, 'val_shift_accuracy')} {cell(row, 'val_source_accuracy')} "
                     f"{cell(row, 'val_program_accuracy'):>14} {cell(row, 'test_accuracy')} "
                     f"{cell(row, 'test_balanced_accuracy')} {gap:>8}")
    return "\n".join(lines)


PROTOCOL_SPLIT = "validation_program"  # the cross-collection validation the protocol chooses on, when present
PROTOCOL_FALLBACK = "validation_source"  # ... and where it is not (the real dataset has no held-out programs)
PROTOCOL_ALPHA = 0.05
PROTOCOL_METHOD = ("seed-level two-level t-test (engine.compare.stats.seed_level_test) of each row against the first, "
                   "Holm-corrected across the rows")


def protocol_split(rows: Sequence[tuple[str, Sequence[Any]]]) -> tuple[str, str | None]:
    """(split, note) the protocol chooses on: PROTOCOL_SPLIT when every finished run of `rows`
    has it in its metrics, else PROTOCOL_FALLBACK with a note saying why (never silent)."""
    finished = [r for _, records in rows for r in records if r.status == "finished"]
    if finished and all((getattr(r, "metrics", None) or {}).get(PROTOCOL_SPLIT) for r in finished):
        return PROTOCOL_SPLIT, None
    some = any((getattr(r, "metrics", None) or {}).get(PROTOCOL_SPLIT) for r in finished)
    why = "not every run has it" if some else PROGRAM_VIEW_MISSING
    return PROTOCOL_FALLBACK, f"cross-val program {why}; choosing on cross-val source ({PROTOCOL_FALLBACK})"


def select_by_cross_validation(
    rows: Sequence[tuple[str, Sequence[Any]]],
    load_predictions: Callable[[Any], dict],
    *,
    split: str | None = None,
    alpha: float = PROTOCOL_ALPHA,
) -> dict[str, Any]:
    """The protocol's choice (docs/PROTOCOL.md), made on a cross-collection validation only.

    rows: [(row name, run records of that row, one per seed)], the current recommendation
    first; records need .id, .status and .group_key; only finished runs count.
    load_predictions(record) -> the run's stored predictions. `split` None: `protocol_split`
    (the program view when every run has it, else the source view, with a "note" saying so).
    Every other row is compared with the first on `split` by the calibrated seed-level test (`stats.compare_family`:
    two-level t-test over seeds and clips, Holm across the rows). A row replaces the first
    only when it is significantly BETTER at `alpha` after Holm; among several, the largest
    mean gain wins. A row with the first's exact configuration (same group key) is never
    chosen, and neither is a row with one run against a base with one run (no seed
    repeats: nothing to calibrate the test on). Never reads test. Returns {"choice", "base",
    "split", "note" (None, or why the fallback split was used), "alpha", "method", "tests": [one stats result per row, with "row", "p_adjusted",
    "significant"; or "row" and "error" when it could not be compared]}.
    """
    note = None
    if split is None:
        split, note = protocol_split(rows)
    if split == "test" or not split.startswith("validation"):
        raise ConfigError(f"the protocol chooses on a validation split, never on {split!r}")
    finished = [(name, [r for r in records if r.status == "finished"]) for name, records in rows]
    if not finished:
        raise ConfigError("the protocol needs at least one row")
    base = finished[0][0]
    units = {name: records for name, records in finished if records}
    pairs = against_reference(list(units), base) if base in units else []
    testable = [(a, b) for a, b in pairs if len(units[a]) + len(units[b]) >= 3]  # seed repeats: never 1 v 1
    tests = compare_family(units, testable, load_predictions, split=split, alpha=alpha)
    tests += [{"a": a, "b": b, "error": "one run on each side: the protocol needs seed repeats (--seeds 2 or more)"}
              for a, b in pairs if (a, b) not in testable]
    for res in tests:
        res["row"] = res["b"]
    better = [r for r in tests if r.get("significant") and r["difference"] > 0]
    choice = max(better, key=lambda r: r["difference"])["row"] if better else base
    return {"choice": choice, "base": base, "split": split, "note": note, "alpha": alpha, "method": PROTOCOL_METHOD,
            "tests": tests}


def format_choice(selection: dict[str, Any]) -> str:
    """The protocol's decision as text: one line per compared row, then the choice."""
    lines = [f"protocol ({selection['method']}; {selection['split']}, alpha {selection['alpha']}):"]
    if selection.get("note"):
        lines.insert(0, f"note: {selection['note']}")
    for res in selection["tests"]:
        if "error" in res:
            lines.append(f"  {res['row']:<26} not compared: {res['error']}")
            continue
        verdict = "significantly better" if res["significant"] and res["difference"] > 0 else (
            "significantly worse" if res["significant"] else "no significant difference")
        lines.append(f"  {res['row']:<26} {100 * res['difference']:+6.1f} points, p {res['p_value']:.3f}, "
                     f"Holm p {res['p_adjusted']:.3f}: {verdict}")
    lines.append(f"protocol choice: {selection['choice']}")
    return "\n".join(lines)
