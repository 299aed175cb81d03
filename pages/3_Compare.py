"""Compare: every run in one sortable table, runs side by side (curves, confusion matrices,
per-class accuracy, the parameters that differ), an honest significance test between two runs,
the clips behind a confusion cell, the clips that flip, the validation-test gap and
parameter-vs-metric views. The selection lives in the URL (?runs=id1,id2) so a comparison can
be shared. Each section is drawn by a ui module."""

from __future__ import annotations

import streamlit as st

from ui import ablation_builder, generalisation_view, mistakes_view, runs_table, side_by_side, significance_view
from ui import compare as cmp
from ui import flips as flips_view
from ui.colors import label_colors, run_colors
from ui import defaults
from ui import common
from ui.common import get_store, render_sidebar
from ui.compare_cache import run_predictions

st.set_page_config(page_title="Compare · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Compare runs")

store = get_store()
runs = store.list_runs()
by_id = {run.id: run for run in runs}
labels = cmp.run_labels(runs)
colors = run_colors(store)  # run id -> its colour on every page


@st.fragment(run_every=5)
def refresh_on_change(seen: tuple) -> None:
    """Rerun the page when runs are added, deleted, queued or end (one small query every 5 s)."""
    if not common.in_full_run("compare") and store.signature() != seen:
        st.rerun()


common.mark_full_run("compare")
refresh_on_change(store.signature())
df = cmp.runs_frame(runs)
chosen = runs_table.render_selection(by_id, labels, colors)
selected = [by_id[i] for i in chosen]
# the page opens on the chosen runs (curves, confusion, verdict); the full table folds away once runs are chosen
with st.expander("All runs: table, filters, sort, download", expanded=not chosen):
    runs_table.render_table(df, by_id, labels)
ablation_builder.render(chosen, by_id, labels)

view = side_by_side.View({}, False, st.session_state.get("cmp_split", "validation"), defaults.NORMALISE_CONFUSION)
if selected:
    view = side_by_side.render(selected, df, labels, colors, label_colors(chosen, labels, colors))

finished = [run for run in selected if (run.metrics or {}).get(view.split)]
if len(finished) >= 2:
    units = significance_view.units_of(finished, labels, view.groups, view.grouped, view.split)
    significance_view.render(units, view.split, view.normalize, labels)
if finished:  # the rest, about the chosen runs only, one tab each
    names = ["Listen to the mistakes", *(["Clips that flip"] if len(finished) >= 2 else []),
             "Validation vs test, parameters"]
    tabs = dict(zip(names, st.tabs(names)))
    with tabs["Listen to the mistakes"]:
        mistakes_view.render(finished, by_id, labels, view.split)
    if "Clips that flip" in tabs:
        with tabs["Clips that flip"]:
            flips_view.render_section(finished, labels, view.groups, view.grouped, run_predictions)
    with tabs["Validation vs test, parameters"]:
        generalisation_view.render(selected, df, by_id, labels)
