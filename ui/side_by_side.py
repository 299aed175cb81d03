"""The Compare page's runs side by side: loss and accuracy curves (seed groups as mean ± band),
confusion matrices and per-class accuracy on one split, and the parameters that differ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from engine.compare import verdicts
from engine.core.labels import short_names_of
from ui import charts, defaults
from ui import compare as cmp
from ui.common import csv_bytes, percent_style
from ui.runs_table import selected_rows


@dataclass(frozen=True)
class View:
    """The choices made here that later sections follow: seed groups (label -> runs), whether
    they are shown grouped, the split and whether confusion matrices are row-normalised."""

    groups: dict[str, list]
    grouped: bool
    split: str
    normalize: bool


def render(selected: Sequence[Any], df: pd.DataFrame, labels: Mapping[str, str], colors: Mapping[str, str],
           lab_colors: Mapping[str, str]) -> View:
    """Curves, confusion matrices, per-class bars and differing parameters of the selected runs."""
    st.subheader("Side by side")
    groups = cmp.seed_groups(selected, labels)
    has_groups = any(len(m) > 1 for m in groups.values())
    c1, c2, c3, c4, c5 = st.columns(5)
    x_axis = c1.radio("x axis", ["epoch", "seconds"], horizontal=True, key="cmp_x")
    log_scale = c2.toggle("log-scale loss", value=defaults.LOG_SCALE_LOSS, key="cmp_log")
    smoothing = c3.slider("EMA smoothing", 0.0, 0.95, 0.0, 0.05, key="cmp_ema")
    grouped = c4.toggle("group seed repeats", value=has_groups, disabled=not has_groups, key="cmp_grouped")
    band = c5.radio("band", ["std", "minmax"], horizontal=True, disabled=not grouped, key="cmp_band")
    chosen = [run.id for run in selected]
    if grouped and has_groups:
        loss_bands = cmp.smooth_bands(cmp.group_bands(groups, "val_loss"), smoothing)
        acc_bands = cmp.smooth_bands(cmp.group_bands(groups, "val_accuracy"), smoothing)
        left, right = st.columns(2)
        group_colors = {label: colors[members[0].id] for label, members in groups.items()}
        left.altair_chart(cmp.band_chart(loss_bands, x=x_axis, band=band, y_title="validation loss",
                                         log_scale=log_scale, colors=group_colors), width="stretch")
        right.altair_chart(cmp.band_chart(acc_bands, x=x_axis, band=band, y_title="validation accuracy",
                                          colors=group_colors), width="stretch")
        st.dataframe(cmp.group_summary(groups), hide_index=True, width="stretch")
    else:
        hist = cmp.history_frame(selected, labels)
        left, right = st.columns(2)
        left.altair_chart(charts.loss_curves(hist, x=x_axis, log_scale=log_scale, smoothing=smoothing,
                                             colors=lab_colors), width="stretch")
        right.altair_chart(charts.accuracy_curves(hist, x=x_axis, smoothing=smoothing, colors=lab_colors,
                                                  columns=charts.VALIDATION_CURVES), width="stretch")
        st.dataframe(percent_style(selected_rows(df, chosen)[["name", "status", *cmp.METRIC_COLUMNS]],
                                   cmp.METRIC_COLUMNS), hide_index=True, width="stretch")
    split, normalize = _confusions(selected, labels, lab_colors)
    _differences(selected, labels)
    st.download_button("Download the comparison (CSV)", csv_bytes(selected_rows(df, chosen)),
                       "comparison.csv", "text/csv")
    return View(groups, bool(grouped and has_groups), split, normalize)


def _confusions(selected: Sequence[Any], labels: Mapping[str, str], lab_colors: Mapping[str, str]) -> tuple[str, bool]:
    d1, d2 = st.columns(2)
    split = d1.radio("Split", ["validation", "test"], horizontal=True, key="cmp_split",
                     help="Validation chooses, test reports: the significance test below follows this too.")
    if split == "test":
        d1.caption(verdicts.TEST_SPLIT_NOTE)
    normalize = d2.toggle("row-normalised", value=defaults.NORMALISE_CONFUSION, key="cmp_norm",
                          help="Each row as its share of the actual class (recall on the diagonal): the big "
                               "classes no longer hide the small ones. Off: clip counts.")
    matrices = {run.id: cmp.confusion_matrix_of(run, split) for run in selected}
    domain = cmp.confusion_domain(matrices.values(), normalize)
    with_matrix = [run for run in selected if matrices[run.id] is not None]
    for start in range(0, len(with_matrix), 2):
        for col, run in zip(st.columns(2), with_matrix[start:start + 2]):
            col.altair_chart(charts.confusion_heatmap(matrices[run.id], short_names_of(run), normalize=normalize,
                                                      title=labels[run.id], domain=domain), width="stretch")
    if with_matrix:
        st.altair_chart(charts.per_class_bars(cmp.per_class_frame(with_matrix, labels, split),
                                              title=f"per-class accuracy ({split})", colors=lab_colors),
                        width="stretch")
    else:
        st.info("None of the chosen runs has finished evaluation yet.")
    return split, normalize


def _differences(selected: Sequence[Any], labels: Mapping[str, str]) -> None:
    diff = cmp.param_diff(selected, labels)
    st.markdown("**Parameters that differ**")
    if len(selected) < 2:
        st.caption("Choose two or more runs.")
    elif diff.empty:
        st.caption("None: the runs share every parameter.")
    else:
        st.dataframe(cmp.shown_diff(diff), width="stretch")
