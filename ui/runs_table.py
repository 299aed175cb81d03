"""The Compare page's runs table (filters, sort, download), our study runs beside the study's
reported numbers, and the selection of runs to compare (kept in the URL: ?runs=id1,id2)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from engine import presets, verdicts
from engine.store import STATUSES
from ui import compare as cmp
from ui import downloads
from ui.colors import swatch
from ui.common import csv_bytes, percent_style, plain


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
    st.dataframe(percent_style(cmp.shown_params(shown[cmp.table_columns(shown)]), cmp.METRIC_COLUMNS),
                 hide_index=True, width="stretch", column_config={
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


def render_selection(by_id: Mapping[str, Any], labels: Mapping[str, str], colors: Mapping[str, str]) -> list[str]:
    """The runs to compare (a multiselect kept in the URL's `runs`, so a comparison can be
    shared), with each chosen run's colour; returns the chosen ids."""
    url = st.query_params.get("runs", "")
    if url and st.session_state.get("_cmp_url") != url:  # a shared link, or the first load
        ids, missing = cmp.parse_run_ids(url, by_id)
        st.session_state["cmp_runs"] = ids
        if missing:
            st.warning(f"Not in this store: {plain(', '.join(missing))}")
    elif "cmp_runs" not in st.session_state:
        st.session_state["cmp_runs"] = st.session_state.get("_cmp_sel", [])
    st.session_state["cmp_runs"] = [i for i in st.session_state["cmp_runs"] if i in by_id]
    chosen = st.multiselect("Runs to compare", list(by_id), key="cmp_runs",
                            format_func=lambda i: f"{labels[i]} · {by_id[i].status}")
    st.session_state["_cmp_sel"] = chosen
    st.session_state["_cmp_url"] = cmp.encode_run_ids(chosen)
    if chosen:
        st.query_params["runs"] = cmp.encode_run_ids(chosen)
    elif "runs" in st.query_params:
        del st.query_params["runs"]
    if chosen:
        st.markdown(" &nbsp; ".join(f"{swatch(colors[i], labels[i])} {html.escape(labels[i])}" for i in chosen),
                    unsafe_allow_html=True)
    return chosen


def selected_rows(df: pd.DataFrame, chosen: Sequence[str]) -> pd.DataFrame:
    """The runs table's rows of the chosen runs."""
    return df[df["id"].isin(chosen)]
