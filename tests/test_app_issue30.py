"""Issue #30: a dashboard a newcomer understands at a glance. One source of defaults (ui.defaults),
honest visuals, Compare on the chosen runs only, tables that convert to Arrow, the home page."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from engine.core.config import RunConfig
from ui import charts, defaults
from ui import compare as cmp

from test_app_compare import add_run, env, open_compare, populated, texts, tiny_ids  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


# ---- 1. one source of defaults --------------------------------------------------------------


def test_chart_helpers_take_their_defaults_from_ui_defaults(monkeypatch):
    hist = pd.DataFrame({"run": ["r"] * 3, "epoch": [1, 2, 3], "seconds": [1.0, 2.0, 3.0],
                         "train_loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.7]})
    spec = charts.loss_curves(hist).to_dict()
    assert (spec["encoding"]["y"]["scale"].get("type") == "log") is defaults.LOG_SCALE_LOSS
    assert (charts.step_loss_chart([2.0, 1.0, 0.5]).to_dict()["encoding"]["y"]["scale"].get("type") == "log") \
        is defaults.LOG_SCALE_LOSS
    matrix = np.array([[3, 1], [0, 4]])
    heat = charts.confusion_heatmap(matrix, ["a", "b"]).to_dict()
    labels = {row["label"] for row in heat["datasets"][next(iter(heat["datasets"]))]}
    assert ("75" in labels) is defaults.NORMALISE_CONFUSION  # 3 of 4 as a row share
    assert cmp.SORT_COLUMNS[0] == defaults.RANK_COLUMN


def test_compare_page_opens_on_the_shared_defaults(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']}"})
    assert at.toggle(key="cmp_log").value is defaults.LOG_SCALE_LOSS
    assert at.toggle(key="cmp_norm").value is defaults.NORMALISE_CONFUSION
    assert at.selectbox(key="cmp_sort").value == defaults.RANK_COLUMN
    # the verdict names the metric that ranks the runs
    assert f"The test compares **{defaults.HEADLINE_NAME}**" in texts(at)


def test_home_ranks_by_the_headline_metric():
    from ui.home import best_runs_frame

    def run(name, acc, bal):
        return SimpleNamespace(name=name, id=name, metrics={"validation": {"accuracy": acc, "balanced_accuracy": bal}},
                               epochs_done=3, tags=[], warning=None)

    table = best_runs_frame([run("x", 0.6, 0.9), run("y", 0.8, 0.5)])
    assert list(table["run"]) == ["y", "x"]  # by validation accuracy, as Compare sorts
    assert list(table.columns[:2]) == ["run", "val acc."]


# ---- 3. Compare uses only the chosen runs ----------------------------------------------------


def test_compare_sections_use_only_the_chosen_runs(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']}"})  # beta s1 is in the store, not chosen
    gaps = next(df.value for df in at.dataframe if "largest class gap" in df.value.columns)
    assert sorted(gaps["run"]) == sorted(["alpha", "beta s0"])
    assert set(at.selectbox(key="gap_run").options) <= {"alpha", "beta s0"}
    # the rest sits in tabs below the chosen runs' curves, confusion and verdict
    assert [t.label for t in at.tabs] == ["Listen to the mistakes", "Clips that flip", "Validation vs test, parameters"]
    # the mistakes open on the page's split; players say what they play
    assert at.selectbox(key="mis_split").value == at.radio(key="cmp_split").value == "validation"
    assert at.get("audio")
    assert any(c.value.startswith("true: **") and "predicted: **" in c.value for c in at.caption)


def test_compare_scatter_shows_only_the_chosen_runs(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']}"})
    scatter = [c for c in at.get("vega_lite_chart") if "beta s1" not in c.proto.spec and "alpha" in c.proto.spec]
    assert scatter and not any("beta s1" in c.proto.spec for c in at.get("vega_lite_chart"))


# ---- 4. every table converts to Arrow --------------------------------------------------------


def test_runs_table_with_whole_clip_and_three_frame_runs_converts_to_arrow():
    def run(name, frames):
        return SimpleNamespace(id=name, name=name, status="finished", tags=[], created=0.0, history=[],
                               group_key=name, warning=None, metrics={},
                               config=RunConfig().with_values(**{"features.frames": frames}),
                               epochs_done=0)

    df = cmp.runs_frame([run("three", 3), run("whole", None)])
    shown = cmp.shown_params(df[cmp.table_columns(df)])
    assert list(shown["features.frames"]) == ["3", "whole clip"]
    pa.Table.from_pandas(shown.drop(columns=["tags"]))  # raised ArrowTypeError: Expected bytes, got a 'float'
