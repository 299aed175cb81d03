"""The Compare page's views over the chosen finished runs: the validation-test gap (per run and per
class) and parameters against a metric (scatter or parallel coordinates)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from engine.compare import verdicts
from engine.core.labels import short_names_of
from ui import charts, defaults
from ui import compare as cmp
from ui.common import percent_style


def render(runs: Sequence[Any], df: pd.DataFrame, by_id: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """Both views, when some run has validation and test results."""
    gaps = cmp.gap_frame(runs, labels)
    if not len(gaps):
        return
    st.subheader("Validation vs test")
    st.caption("Validation and training come from one collection, test from another: a large positive gap "
               "means the model learnt the collection as much as the instrument.")
    st.dataframe(percent_style(gaps.drop(columns="id"), [c for c in gaps.columns if c not in ("run", "id", "class")]),
                 hide_index=True, width="stretch")
    gap_run = st.selectbox("Per-class breakdown of", gaps["id"], format_func=labels.get, key="gap_run")
    per_class = cmp.gap_per_class_frame(by_id[gap_run], short_names_of(by_id[gap_run]))
    long = per_class.melt(id_vars="class", value_vars=["validation", "test"], var_name="split", value_name="accuracy")
    st.altair_chart(charts.per_class_bars(long, group="split", title="per-class accuracy"), width="stretch")
    _params_vs_metric(df[df["id"].isin(gaps["id"])])


def _params_vs_metric(finished_df: pd.DataFrame) -> None:
    st.subheader("Parameters vs metrics")
    p1, p2, p3 = st.columns(3)
    view = p1.radio("View", ["scatter", "parallel coordinates"], horizontal=True, key="pm_view")
    pm_metric = p2.selectbox("Metric", list(cmp.METRICS), index=list(cmp.METRICS).index(defaults.RANK_COLUMN), key="pm_metric")
    if cmp.is_test_metric(pm_metric):
        p2.caption(verdicts.TEST_SPLIT_NOTE)
    varying = [p for p in cmp.param_names() if finished_df[p].map(cmp.value_label).nunique() > 1] or list(cmp.KEY_PARAMS)
    if view == "scatter":
        pm_param = p3.selectbox("Parameter", varying, key="pm_param")
        st.altair_chart(cmp.param_metric_chart(finished_df, pm_param, pm_metric), width="stretch")
    else:
        axes = p3.multiselect("Parameters", cmp.param_names(), default=varying[:5], key="pm_axes")
        st.altair_chart(cmp.parallel_coordinates_chart(cmp.parallel_frame(finished_df, axes, pm_metric),
                                                       [*axes, pm_metric]), width="stretch")
