"""Confusion matrices: a run's, a seed group's mean, one colour domain, the B - A difference
heatmap, and the clips behind a confusion cell. No streamlit here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from engine.core.labels import SHORT_NAMES
from engine.compare.stats import confusion_difference


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
    # cell text: signed change in whole percentage points of the row (or clips), short enough
    # for a cell at 390 px; the hover has the exact values
    scale = 100 if normalize else 1
    df = df.assign(label=[("" if abs(d) < 1e-12 else f"{scale * d:+.0f}") for d in df["diff"]])
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", sort=names, title="predicted", axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y("actual:N", sort=names, title="actual", axis=alt.Axis(labelOverlap=False)),
    )
    rects = base.mark_rect().encode(
        # the legend says what the colour means, in words: the numbers are in the cells (B - A)
        color=alt.Color("effect:Q", scale=alt.Scale(scheme="redblue", domain=[-top, top]),
                        title=legend_title(name_b),
                        legend=alt.Legend(values=[-top, 0, top], titleLimit=240, labelLimit=160, labelExpr=(
                            f"datum.value > 0 ? 'better for {name_b}' : datum.value < 0 ? 'worse for {name_b}' "
                            ": 'no change'"))),
        tooltip=["actual:N", "predicted:N", alt.Tooltip("a:Q", title=name_a, format=".3~f"),
                 alt.Tooltip("b:Q", title=name_b, format=".3~f"), alt.Tooltip("diff:Q", title="B - A", format="+.3~f"),
                 "verdict:N"],
    )
    text = base.mark_text(fontSize=10).encode(text="label:N")
    unit = "percentage points of the row" if normalize else "clips"
    return (rects + text).properties(height=320, title=f"{name_b} - {name_a} ({unit})")


def legend_title(name_b: str = "B") -> list[str]:
    """The difference heatmap's colour legend title, two lines: what blue and red mean."""
    return [f"blue: better for {name_b},", f"red: worse for {name_b}"]


def cell_note(normalize: bool, name_a: str = "A", name_b: str = "B") -> str:
    """What a number in a difference cell is (the page says it under the chart's heading)."""
    unit = "percentage points of the actual class's clips" if normalize else "clips"
    return (f"{name_b} minus {name_a}, in {unit}: on the diagonal + means more clips right, "
            f"off it - means that mistake made less often")




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
    argmax is `predicted`, most confident first: uuid, p(actual), p(predicted), top 3 guesses.
    The diagonal (actual == predicted: the clips it got right) has one probability column."""
    shown = [actual] if actual == predicted else [actual, predicted]
    columns = ["uuid", *(f"p({class_names[k]})" for k in shown), "top 3"]
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
            str(pred["ids"][i]), *(float(probs[i, k]) for k in shown),
            ", ".join(f"{class_names[k]} {probs[i, k]:.0%}" for k in top),
        ])
    return pd.DataFrame(rows, columns=columns)
