"""A run's calibration and out-of-distribution check (issue #24) on the Train page.

- reliability_frame(record)      the stored reliability tables as one long DataFrame
- reliability_chart(record)      Altair: accuracy against confidence per bin, validation and
                                 test side by side, before and after temperature scaling
- render(record)                 the section: method, temperature, ECE/NLL table, diagram, OOD check
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from engine.learn.trust import NO_OOD_CHECK, UNCALIBRATED, calibration_note, ood_note, trust_of

SPLITS = ("validation", "test")
STAGES = {"reliability_before": "before (softmax)", "reliability_after": "after (temperature scaling)"}


def reliability_frame(record: dict) -> pd.DataFrame:
    """One row per split x stage x non-empty bin: split, stage, confidence (mean top probability),
    accuracy, clips, low, high."""
    rows = []
    for split in SPLITS:
        report = record["splits"].get(split) or {}
        for key, stage in STAGES.items():
            for row in report.get(key) or []:
                if row["count"]:
                    rows.append({"split": split, "stage": stage, "confidence": row["confidence"],
                                 "accuracy": row["accuracy"], "clips": row["count"], "low": row["low"], "high": row["high"]})
    return pd.DataFrame(rows, columns=["split", "stage", "confidence", "accuracy", "clips", "low", "high"])


def reliability_chart(record: dict) -> alt.Chart:
    """Reliability diagrams of the stored calibration record, one per split (validation | test):
    x = mean confidence of a bin, y = accuracy in it, point size = clips; the diagonal is perfect
    calibration. Titles carry each split's ECE before -> after (the record's ECE method)."""
    frame = reliability_frame(record)
    panels = []
    for split in SPLITS:
        report = record["splits"].get(split)
        if not report:
            continue
        diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
            strokeDash=[4, 4], color="gray").encode(x="x:Q", y="y:Q")
        data = frame[frame["split"] == split]
        axis = alt.Scale(domain=[0, 1])
        points = alt.Chart(data).mark_line(point=True).encode(
            x=alt.X("confidence:Q", scale=axis, title="confidence (mean top probability in bin)", axis=alt.Axis(format="%")),
            y=alt.Y("accuracy:Q", scale=axis, title="accuracy in bin", axis=alt.Axis(format="%")),
            color=alt.Color("stage:N", title=None, legend=alt.Legend(orient="bottom")),
            size=alt.Size("clips:Q", title="clips in bin", legend=None),
            tooltip=["stage:N", alt.Tooltip("low:Q", format=".2f", title="bin from"),
                     alt.Tooltip("high:Q", format=".2f", title="bin to"), alt.Tooltip("confidence:Q", format=".1%"),
                     alt.Tooltip("accuracy:Q", format=".1%"), "clips:Q"])
        title = f"{split}: ECE {_pct(report['ece_before'])} → {_pct(report['ece_after'])}"
        panels.append((diagonal + points).properties(title=title, width=300, height=300))
    return alt.hconcat(*panels)


def metrics_frame(record: dict) -> pd.DataFrame:
    """ECE and NLL before and after per split (the stored record's methods)."""
    return pd.DataFrame([{"split": name, "clips": r["n"], "ECE before": r["ece_before"], "ECE after": r["ece_after"],
                          "NLL before": r["nll_before"], "NLL after": r["nll_after"]}
                         for name, r in record["splits"].items()])


def render(metrics: dict) -> None:
    """The Train page's calibration and OOD section for a finished run's metrics."""
    st.markdown("**Calibration and out-of-distribution check**")
    record, check = trust_of(metrics)["calibration"], trust_of(metrics)["ood"]
    if record is None:
        st.caption(f"Probabilities are {UNCALIBRATED}. {NO_OOD_CHECK.capitalize()}.")
        return
    st.caption(f"Probabilities are {calibration_note(metrics)}. Method: {record['method']}. "
               f"Calibration error: {record['ece_method']}; NLL: {record['nll_method']}.")
    st.dataframe(metrics_frame(record), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("ECE before", "ECE after", "NLL before", "NLL after")})
    if any(record["splits"].get(s) for s in SPLITS):
        st.altair_chart(reliability_chart(record), width="content")
    st.caption(ood_note(check))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
