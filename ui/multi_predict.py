"""Predict page: one clip through several runs. A runs x classes heatmap of probabilities, each
run's label, how many runs agree, and, for long clips, each run's label window by window."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from engine.core.labels import short_name
from engine.runs.store import group_key
from ui.compare import metric
from ui.common import plain

MAX_DEFAULT_RUNS = 6


def _val_accuracy(record) -> float:
    """Validation accuracy for ranking; -1 (below every run) when there is none."""
    value = metric(record, "validation", "accuracy")
    return -1.0 if value is None else value


def best_per_configuration(runs: Sequence[Any], limit: int = MAX_DEFAULT_RUNS) -> list[str]:
    """Run ids: the best run of each configuration (seed repeats share one) by *validation*
    accuracy, best configurations first, at most `limit`."""
    best: dict[str, Any] = {}
    for run in runs:
        key = group_key(run.config)
        if key not in best or _val_accuracy(run) > _val_accuracy(best[key]):
            best[key] = run
    ranked = sorted(best.values(), key=_val_accuracy, reverse=True)
    return [run.id for run in ranked[:limit]]


def default_runs(runs: Sequence[Any], compare_selection: Sequence[str]) -> list[str]:
    """The runs chosen on the Compare page (those that are finished), else the best per configuration."""
    finished = {run.id for run in runs}
    chosen = [run_id for run_id in compare_selection if run_id in finished]
    return chosen or best_per_configuration(runs)


def probability_frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Long table: run, class, probability, top (the run's label); results: run label -> Prediction.to_dict()."""
    rows = []
    for run, pred in results.items():
        for name, p in pred["probabilities"].items():
            rows.append({"run": run, "class": name, "probability": float(p), "top": name == pred["label"]})
    return pd.DataFrame(rows, columns=["run", "class", "probability", "top"])


def agreement(results: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, int]:
    """(the label most runs give, how many runs give it); (None, 0) for no runs."""
    if not results:
        return None, 0
    label, count = Counter(pred["label"] for pred in results.values()).most_common(1)[0]
    return label, count


def answer_counts(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, int]]:
    """(label, how many runs give it) for every label some run gives, most given first (ties in
    the order the runs come); the counts add up to the number of runs."""
    return Counter(pred["label"] for pred in results.values()).most_common()


def answers_sentence(results: Mapping[str, Mapping[str, Any]], true_label: str | None = None) -> str:
    """What the runs answer, every label with its count, so that the sentence reads as the table:
    "All 3 models say **flute**.", "2 of 3 models say **flute**, 1 says **piano**." or, with no
    majority, "The 2 models disagree: 1 says **piano**, 1 says **flute**."; with a true label,
    how many are right."""
    counts = answer_counts(results)
    total = len(results)
    if len(counts) == 1:
        sentence = f"All {total} models say **{counts[0][0]}**." if total > 1 else f"The model says **{counts[0][0]}**."
    else:
        others = ", ".join(f"{n} {'says' if n == 1 else 'say'} **{label}**" for label, n in counts[1:])
        first_label, first_n = counts[0]
        if first_n > counts[1][1]:
            sentence = f"{first_n} of {total} models say **{first_label}**, {others}."
        else:
            lead = f"{first_n} {'says' if first_n == 1 else 'say'} **{first_label}**"
            sentence = f"The {total} models disagree: {lead}, {others}."
    if true_label is not None:
        right = sum(pred["label"] == true_label for pred in results.values())
        sentence += f" The true label is **{true_label}**: {right} of {total} models are right."
    return sentence


def panel_runs(chosen: str, others: Sequence[str]) -> list[str]:
    """The runs of the "every run" panel: the model chosen above first, then the others chosen
    for comparison (each once), so that the panel never leaves out the answer shown above it."""
    return [chosen, *(run_id for run_id in dict.fromkeys(others) if run_id != chosen)]


def runs_heatmap(df: pd.DataFrame, true_label: str | None = None) -> alt.Chart:
    """Classes (rows) x runs (columns), colour = probability, text = percent, each run's label
    outlined. Classes run down the page so that at 390 px each run's column keeps room for its
    numbers (8 class columns did not)."""
    df = df.assign(text=df["probability"].map(lambda p: f"{100 * p:.0f}%"), **{"class": df["class"].map(short_name)})
    classes = list(dict.fromkeys(df["class"]))
    runs = list(dict.fromkeys(df["run"]))
    y_title = "class" + (f" (true: {short_name(true_label)})" if true_label else "")
    base = alt.Chart(df).encode(
        # run labels below, slanted down-left from their column: the last one cannot run off the
        # right edge (slanted up-right above the chart, it was cut at 390 px)
        x=alt.X("run:N", sort=runs, title=None, axis=alt.Axis(orient="bottom", labelAngle=-30, labelLimit=140,
                                                               labelOverlap=False)),
        y=alt.Y("class:N", sort=classes, title=y_title, axis=alt.Axis(labelOverlap=False)))
    heat = base.mark_rect().encode(
        color=alt.Color("probability:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), title="probability",
                        legend=alt.Legend(orient="bottom", format=".0%")),
        tooltip=["run:N", "class:N", alt.Tooltip("probability:Q", format=".1%")])
    outline = base.transform_filter(alt.datum.top).mark_rect(fill=None, stroke="#d62728", strokeWidth=2)
    text = base.mark_text(fontSize=10).encode(
        text="text:N", color=alt.condition(alt.datum.probability > 0.5, alt.value("white"), alt.value("black")))
    # Streamlit fits the whole chart, axes and legend included, into `height`
    return (heat + outline + text).properties(height=26 * len(classes) + 170)


def windows_frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Long table of each run's top label per 3-second window: run, start, end, label, probability."""
    rows = []
    for run, pred in results.items():
        names = list(pred["probabilities"])
        for w in pred["windows"]:
            probs = np.asarray(w["probabilities"], dtype=float)
            k = int(probs.argmax())
            rows.append({"run": run, "start": float(w["start"]), "end": float(w["start"]) + float(w["duration"]),
                         "label": names[k], "probability": float(probs[k])})
    return pd.DataFrame(rows, columns=["run", "start", "end", "label", "probability"])


def windows_chart(df: pd.DataFrame, classes: Sequence[str]) -> alt.Chart:
    """One row per run over time: each window coloured by the run's label there."""
    runs = list(dict.fromkeys(df["run"]))
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("start:Q", title="seconds"), x2="end:Q",
        y=alt.Y("run:N", sort=runs, title=None, axis=alt.Axis(labelLimit=220)),
        color=alt.Color("label:N", scale=alt.Scale(domain=list(classes), scheme="tableau10"), title="label"),
        opacity=alt.Opacity("probability:Q", scale=alt.Scale(domain=[0, 1], range=[0.35, 1]), legend=None),
        tooltip=["run:N", "label:N", alt.Tooltip("start:Q", format=".1f"), alt.Tooltip("probability:Q", format=".1%")],
    ).properties(height=30 * len(runs) + 70)


def render_runs_panel(clip_name: str, true_label: str | None, results: Mapping[str, Mapping[str, Any]],
                      failures: Mapping[str, str]) -> None:
    """The "every run" panel for one clip (results: run label -> Prediction.to_dict())."""
    st.markdown(f"**{plain(clip_name)}: {len(results)} models**")
    for run, problem in failures.items():
        st.warning(plain(f"{run}: {problem}"))
    if not results:
        return
    st.markdown(answers_sentence(results, true_label))
    st.caption("First column: the model chosen above. Outlined: each model's answer.")
    df = probability_frame(results)
    st.altair_chart(runs_heatmap(df, true_label), width="stretch")
    if any(len(pred["windows"]) > 1 for pred in results.values()):
        st.caption("Each model's answer over time (one row per model, one cell per 3-second window; "
                   "paler = less sure).")
        classes = list(next(iter(results.values()))["probabilities"])
        st.altair_chart(windows_chart(windows_frame(results), classes), width="stretch")
