"""Compare page sections: the clips that flip between two runs (or seed groups), and a runs x runs
agreement matrix. The numbers come from engine.compare.agreement; this module only lays them out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from engine.compare.agreement import FLIP_KINDS, agreement_matrix, flips
from engine.core.errors import EngineError
from engine.core.labels import short_names_of
from ui import charts
from ui.common import dataset_ready, load_dataset_cached, percent_style, plain

KIND_TITLES = {"fixed": "fixed (A wrong, B right)", "broken": "broken (A right, B wrong)",
               "still_wrong": "changed, still wrong"}
PLAYABLE = 5  # clips shown with audio, spectrogram and probabilities


def flips_frame(entries: Sequence[Mapping[str, Any]], *, grouped: bool = False) -> pd.DataFrame:
    """One row per flipped clip: clip, true, A, B, p(true) on each side, change (0..1);
    with seed groups also how many seeds of each side voted for the side's label."""
    rows = []
    for e in entries:
        row = {"clip": e["file"], "true": e["true_label"], "A says": e["label_a"], "B says": e["label_b"],
               "A p(true)": e["probabilities_a"][e["true_label"]], "B p(true)": e["probabilities_b"][e["true_label"]],
               "change": e["change"]}
        if grouped:
            row["A seeds agreeing"] = e["seeds_agreeing_a"]
            row["B seeds agreeing"] = e["seeds_agreeing_b"]
        rows.append(row)
    columns = ["clip", "true", "A says", "B says", "A p(true)", "B p(true)", "change"]
    return pd.DataFrame(rows, columns=columns + (["A seeds agreeing", "B seeds agreeing"] if grouped else []))


def _seeds(n: int) -> str:
    """'1 seed' / '3 seeds'."""
    return f"{n} seed" if n == 1 else f"{n} seeds"


def filter_flips(entries: Sequence[Mapping[str, Any]], true_label: str | None, predicted: str | None) -> list:
    """Entries whose true label is `true_label` and where either side predicted `predicted` (None: any)."""
    return [e for e in entries
            if (true_label is None or e["true_label"] == true_label)
            and (predicted is None or predicted in (e["label_a"], e["label_b"]))]


def agreement_chart(result: Mapping[str, Any], labels: Mapping[str, str]) -> alt.Chart:
    """Heatmap of the share of clips two runs label alike, Cohen's kappa in each cell's text."""
    names = [labels.get(r, r) for r in result["runs"]]
    rows = []
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            kappa = result["kappa"][i][j]
            rows.append({"run": a, "other": b, "agreement": result["agreement"][i][j],
                         "text": f"{result['agreement'][i][j]:.0%}" + ("" if i == j or kappa is None else f" κ {kappa:.2f}")})
    df = pd.DataFrame(rows)
    base = alt.Chart(df).encode(
        x=alt.X("other:N", sort=names, title=None, axis=alt.Axis(labelLimit=160, labelAngle=-20, orient="top")),
        y=alt.Y("run:N", sort=names, title=None, axis=alt.Axis(labelLimit=160, labelOverlap=False)))
    cells = base.mark_rect().encode(
        color=alt.Color("agreement:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), title="agree"),
        tooltip=["run:N", "other:N", alt.Tooltip("agreement:Q", format=".1%"), "text:N"])
    text = base.mark_text(fontSize=11).encode(
        text="text:N", color=alt.condition(alt.datum.agreement > 0.6, alt.value("white"), alt.value("black")))
    return (cells + text).properties(height=42 * len(names) + 90)  # axes included (Streamlit fits)


def render_flips(units: Mapping[str, Sequence[Any]], load: Callable[[Any], dict], split: str,
                 play: Callable[[str], None] | None = None) -> None:
    """The "Clips that flip" section. units: display name -> runs (one run, or a seed group);
    load(run) -> the run's stored predictions; play(clip_id) draws the clip's audio + spectrogram."""
    names = list(units)
    c1, c2 = st.columns(2)
    name_a = c1.selectbox("A (reference)", names, index=0, key="flip_a")
    name_b = c2.selectbox("B", names, index=min(1, len(names) - 1), key="flip_b")
    if name_a == name_b:
        st.info("Choose two different runs.")
        return
    try:
        class_names = short_names_of(units[name_a][0])
        if class_names != short_names_of(units[name_b][0]):
            raise EngineError("A and B were trained on different classes")
        out = flips([load(r) for r in units[name_a]], [load(r) for r in units[name_b]], split=split,
                    class_names=class_names)
    except EngineError as exc:
        st.warning(plain(f"Cannot compare these two clip by clip: {exc}"))
        return
    grouped = out["runs_a"] > 1 or out["runs_b"] > 1
    c = out["counts"]
    st.markdown(f"On **{out['n']}** {split} clips, B **fixed {c['fixed']}**, **broke {c['broken']}**, and changed "
                f"{c['still_wrong']} wrong answers into other wrong answers; {c['same']} clips kept their label.")
    st.caption("Fixed and broken are the two discordant cells of McNemar's table for these runs."
               + (f" Seed groups vote: each side's label is the one most of its seeds predicted (A has "
                  f"{_seeds(out['runs_a'])}, B {_seeds(out['runs_b'])}); the table says how many seeds agree." if grouped else ""))
    f1, f2, f3 = st.columns(3)
    kind = f1.radio("Show", FLIP_KINDS, format_func=KIND_TITLES.get, key="flip_kind")
    true_pick = f2.selectbox("True class", ["(any)", *class_names], key="flip_true")
    pred_pick = f3.selectbox("Predicted class (A or B)", ["(any)", *class_names], key="flip_pred")
    entries = filter_flips(out[kind], None if true_pick == "(any)" else true_pick,
                           None if pred_pick == "(any)" else pred_pick)
    st.dataframe(percent_style(flips_frame(entries, grouped=grouped), ("A p(true)", "B p(true)", "change")),
                 hide_index=True, width="stretch")
    if not entries:
        return
    st.caption(f"The {min(PLAYABLE, len(entries))} largest changes, with both runs' probabilities:")
    for e in entries[:PLAYABLE]:
        with st.expander(f"{e['file'][:8]} · true {e['true_label']} · A {e['label_a']} → B {e['label_b']}"):
            left, right = st.columns(2)
            left.altair_chart(_probability_pair(e), width="stretch")
            if play is not None:
                with right:
                    play(e["file"])


def _probability_pair(entry: Mapping[str, Any]) -> alt.Chart:
    """Grouped horizontal bars: each class's probability under A and under B."""
    classes = list(entry["probabilities_a"])
    df = pd.DataFrame([{"class": c, "run": side, "probability": float(entry[f"probabilities_{side.lower()}"][c])}
                       for c in classes for side in ("A", "B")])
    return alt.Chart(df).mark_bar().encode(
        y=alt.Y("class:N", sort=classes, title=None),
        yOffset="run:N",
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=alt.Color("run:N", scale=alt.Scale(domain=["A", "B"], range=["#9aa5b1", "#2f6db5"])),
        tooltip=["class:N", "run:N", alt.Tooltip("probability:Q", format=".1%")],
    ).properties(height=28 * len(classes) + 20)


def render_agreement(runs: Sequence[Any], labels: Mapping[str, str], load: Callable[[Any], dict], split: str) -> None:
    """The "Agreement between runs" section for the selected finished runs."""
    try:
        result = agreement_matrix({run.id: load(run) for run in runs}, split=split)
    except EngineError as exc:
        st.warning(plain(f"Cannot measure agreement: {exc}"))
        return
    st.caption(f"Share of the {result['n']} {split} clips on which two runs give the same label; κ is Cohen's "
               "kappa (agreement beyond what two runs with these label frequencies would reach by chance). "
               "Seeds of one configuration that agree far less than 100% mean single runs are noisy.")
    st.altair_chart(agreement_chart(result, labels), width="stretch")
    sentence = agreement_sentence(result["agreement"])
    if sentence:
        st.caption(sentence)


def agreement_sentence(agreement: Sequence[Sequence[float]]) -> str:
    """The agreement matrix in one sentence: one pair's share, or the range over several pairs
    (no "ranges from 56.5% to 56.5%"); "" for fewer than two runs."""
    values = np.array(agreement, dtype=float)
    pairs = values[np.triu_indices(len(values), k=1)] if values.ndim == 2 else np.array([])
    if pairs.size == 0:
        return ""
    if pairs.size == 1:
        return f"The two runs agree on {pairs[0]:.1%} of the clips."
    if np.isclose(pairs.min(), pairs.max()):
        return f"Every pair of runs agrees on {pairs[0]:.1%} of the clips."
    return f"Pairwise agreement ranges from {pairs.min():.1%} to {pairs.max():.1%} over {pairs.size} pairs."


@st.cache_data(max_entries=64, show_spinner=False)
def _clip_mel(path: str) -> np.ndarray:
    """Mel spectrogram in dB (128 bands as on every page, hop 512) of the audio file at `path`, decoded once per server."""
    from engine.data.audio import MODEL_SAMPLE_RATE, load_audio

    return charts.mel_db(load_audio(path), MODEL_SAMPLE_RATE, n_mels=128)


def play_dataset_clip(data: str, clip_id: str) -> None:
    """Audio player and mel spectrogram of the clip `clip_id` of dataset `data` (a caption instead
    when the dataset is absent or the clip cannot be read)."""
    from engine.data.audio import MODEL_SAMPLE_RATE
    from engine.data.dataset import find_clip

    if not dataset_ready(data):
        st.caption("The dataset is not available here, so the clip cannot be played.")
        return
    try:
        path = str(find_clip(load_dataset_cached(data), clip_id).path)
        st.audio(path)
        st.altair_chart(charts.matrix_heatmap(_clip_mel(path), frame_seconds=512 / MODEL_SAMPLE_RATE,
                                              row_title="mel band", color_title="dB"), width="stretch")
    except EngineError as exc:
        st.caption(plain(f"{clip_id}: {exc}"))


def render_section(finished: Sequence[Any], labels: Mapping[str, str], groups: Mapping[str, list], grouped: bool,
                   load: Callable[[Any], dict]) -> None:
    """The Compare page's "Clips that flip" and "Agreement between runs" for two or more finished
    runs (seed groups when `grouped`); `load(run)` -> the run's stored predictions."""
    st.subheader("Clips that flip")
    flip_units = {labels[r.id]: [r] for r in finished}
    if grouped:
        flip_units = {k: v for k, v in ((label, [r for r in members if r.metrics.get("test")])
                                        for label, members in groups.items()) if v}
    flip_split = st.radio("Split", ["validation", "test"], horizontal=True, key="flip_split")
    render_flips(flip_units, load, flip_split, lambda clip_id: play_dataset_clip(finished[0].config.data, clip_id))
    st.subheader("Agreement between runs")
    render_agreement(finished, labels, load, flip_split)
