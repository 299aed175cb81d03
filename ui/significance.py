"""The Compare page's significance tables: plain data in (results of engine.compare.stats.compare_family),
DataFrames out. No streamlit here, so it is unit-testable; the words come from engine.compare.verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from engine.compare import stats
from engine.compare.verdicts import format_p

# What answers the question first (a phone shows about three columns): which B, by how much,
# whether it holds after Holm; then the details.
FAMILY_COLUMNS: tuple[str, ...] = (
    "B", "difference (B - A)", "Holm-adjusted p", "verdict", "95% interval", "A", "runs", "accuracy A", "accuracy B",
    "p",
)
MODES: tuple[str, ...] = ("each against A", "every pair")


def family_pairs(names: Sequence[str], reference: str, other: str, mode: str) -> list[tuple[str, str]]:
    """The pairs the page tests together: every unit against the reference (an ablation's rows
    against its base) or every pair; the pair of (reference, other) always oriented that way."""
    if mode == MODES[0]:
        return stats.against_reference(names, reference)
    pairs = stats.all_pairs(names)
    return [(reference, other) if set(pair) == {reference, other} else pair for pair in pairs]


def row_verdict(result: dict[str, Any]) -> str:
    """A short verdict for one row of the family table."""
    if "error" in result:
        return f"cannot test: {result['error']}"
    if result.get("same_configuration"):
        return "same configuration: seed noise"
    if result["significant"]:
        return f"{result['b'] if result['better'] == 'B' else result['a']} better"
    if result.get("too_few_seeds") or result["scope"] == "runs":
        return "no difference shown (too few seeds to judge configurations)" if result["scope"] != "runs" \
            else "no difference shown (one run each)"
    return "no difference shown"


def family_frame(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per comparison: labels, runs per side, mean accuracies, the difference and its
    95% interval (percentage points), raw and Holm-adjusted p, and a short verdict."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append({"A": r["a"], "B": r["b"], "verdict": row_verdict(r)})
            continue
        low, high = r["ci"]
        rows.append({
            "A": r["a"], "B": r["b"], "runs": f"{r['n_runs_a']} v {r['n_runs_b']}",
            "accuracy A": r["accuracy_a"], "accuracy B": r["accuracy_b"],
            "difference (B - A)": f"{r['difference'] * 100:+.1f} points",
            "95% interval": f"{low * 100:+.1f} to {high * 100:+.1f}",
            "p": format_p(r["p_value"]), "Holm-adjusted p": format_p(r.get("p_adjusted", r["p_value"])),
            "verdict": row_verdict(r),
        })
    return pd.DataFrame(rows, columns=list(FAMILY_COLUMNS))
