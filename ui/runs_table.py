"""The Compare page's runs table (filters, sort, download), our study runs beside the study's
reported numbers, and the selection of runs to compare (kept in the URL: ?runs=id1&runs=id2)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from engine.learn import presets
from engine.compare import verdicts
from engine.runs.store import STATUSES
from ui import compare as cmp
from ui import downloads
from ui.colors import swatch
from engine.core.space import format_bytes, free_bytes
from ui.common import csv_bytes, get_store, percent_style, plain, runs_in_url


def _with_sizes(shown: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The table with each run's size on disk ("size (MB)", before the id) and the columns to show;
    a caption gives the store's total and the free space."""
    store = get_store()
    sized = shown.assign(**{"size (MB)": [round(store.run_bytes(i) / 1e6, 2) for i in shown["id"]]})
    st.caption(f"Run store: {format_bytes(store.total_bytes())} on disk; {format_bytes(free_bytes(store.runs_dir))} "
               "free on its disk. Deleting a run frees its size.")
    columns = cmp.table_columns(sized)
    return sized, [*columns[:-1], "size (MB)", columns[-1]]


def render_table(df: pd.DataFrame, by_id: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """Every run in one filterable, sortable table; the study rows beside the study's numbers."""
    st.subheader("Runs")
    if df.empty:
        st.info("No runs yet. Train one on the **Train** page, or queue an ablation below.")
    f1, f2, f3, f4 = st.columns([2, 1, 1.5, 2])
    status_filter = f1.multiselect("Status", [s for s in STATUSES if s in set(df["status"])], key="cmp_status")
    tag_filter = f2.selectbox("Tag", ["(any)", *cmp.all_tags(df)], key="cmp_tag")
    param_filter = f3.selectbox("Parameter", ["(none)", *cmp.param_names()], key="cmp_param")
    value_filter = f4.multiselect("Values", cmp.param_values(df, param_filter) if param_filter != "(none)" else [],
                                  key="cmp_values")
    shown = cmp.filter_runs(df, status_filter, None if tag_filter == "(any)" else tag_filter,
                            None if param_filter == "(none)" else param_filter, value_filter)
    sort_by = st.selectbox("Sort by", cmp.SORT_COLUMNS, key="cmp_sort",
                           help="Validation chooses, test reports: sorting by a test column picks on the test split.")
    if cmp.is_test_metric(sort_by):
        st.caption(verdicts.TEST_SPLIT_NOTE)
    shown = cmp.sort_runs(shown, sort_by)
    st.caption(f"{len(shown)} of {len(df)} runs, best {sort_by} first (or click a column header). Rates are on the "
               "validation or test split; *val-test gap* = validation minus test accuracy; *cross-val acc* = accuracy "
               "on the validation clips played through a held-out recording chain (a new channel); *cross-val source "
               "acc* = the same clips with their source changed too (formants and pitch moved, then that chain); "
               "*cross-val program acc* = demo songs played by GM programs training never plays (6 of 8 classes; "
               "empty on the real dataset, which has no program metadata). Configurations are chosen on cross-val "
               "program when the dataset has it, else on cross-val source (docs/PROTOCOL.md).")
    shown, columns = _with_sizes(shown)
    st.dataframe(percent_style(cmp.shown_params(shown[columns]), cmp.METRIC_COLUMNS),
                 hide_index=True, width="stretch", column_config={
                     # the name stays in view while a narrow screen scrolls the table sideways
                     "name": st.column_config.TextColumn(pinned=True, width=150),
                     "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                     "warning": st.column_config.TextColumn(width="medium")})
    st.download_button("Download this table (CSV)", csv_bytes(shown), "runs.csv", "text/csv")
    downloads.history_download([by_id[i] for i in shown["id"]])

    study_rows = cmp.study_frame([by_id[i] for i in shown["id"]], labels, presets.STUDY_REPORTED,
                                 presets.STUDY_ABLATION_CHANGES, presets.STUDY_BASE,
                                 presets.STUDY_FINAL_ROW, presets.STUDY_REPORTED_FINAL_TEST)
    if len(study_rows):
        st.markdown("**Our study runs beside the study's reported numbers** (the study reported validation "
                    "accuracy; only its final model, batch 50, was evaluated on test)")
        st.dataframe(percent_style(study_rows, [c for c in study_rows.columns if "acc" in c]), hide_index=True,
                     width="stretch")


RUNS_KEY = "runs"  # the multiselect's key and its URL parameter (?runs=label1&runs=label2)


def render_selection(by_id: Mapping[str, Any], labels: Mapping[str, str], colors: Mapping[str, str]) -> list[str]:
    """The runs to compare (a multiselect bound to the URL's `runs`, so a comparison can be
    shared), with each chosen run's colour; returns the chosen ids.

    The binding writes the URL with history.replaceState: changing the selection adds no
    history entry, so Back leaves the page instead of stepping through every selection (a
    `st.query_params` write pushes one). The URL holds the runs' labels (unique names, as the
    charts show them); ids and old links (?runs=id1,id2) open their runs too."""
    if RUNS_KEY not in st.session_state:  # the first render of this visit: a link, a reload, or the last selection
        found = runs_in_url(RUNS_KEY, dict(labels))
        if found is not None and found[1]:
            st.warning(f"Not in this store: {plain(', '.join(found[1]))}")
        ids = found[0] if found is not None else [i for i in st.session_state.get("_cmp_sel", []) if i in by_id]
        # Set only what the binding cannot read itself (ids, old links, the last selection):
        # a value set here reaches the URL as a new history entry.
        if ids and st.query_params.get_all(RUNS_KEY) != [labels[i] for i in ids]:
            st.session_state[RUNS_KEY] = ids
    elif any(i not in by_id for i in st.session_state[RUNS_KEY]):  # a run was deleted meanwhile
        st.session_state[RUNS_KEY] = [i for i in st.session_state[RUNS_KEY] if i in by_id]
    # option text without the status, which changes: it is what the URL holds
    chosen = st.multiselect("Runs to compare", list(by_id), key=RUNS_KEY, bind="query-params",
                            format_func=lambda i: labels[i])
    st.session_state["_cmp_sel"] = chosen  # the Predict page's default, and this page's next visit
    if chosen:
        st.markdown(" &nbsp; ".join(  # one run's dot and label never split over two lines
            f'<span style="white-space:nowrap">{swatch(colors[i], labels[i])} {html.escape(labels[i])}'
            + ("" if by_id[i].status == "finished" else f" · {by_id[i].status}") + "</span>"
            for i in chosen), unsafe_allow_html=True)
    return chosen


def selected_rows(df: pd.DataFrame, chosen: Sequence[str]) -> pd.DataFrame:
    """The runs table's rows of the chosen runs."""
    return df[df["id"].isin(chosen)]
