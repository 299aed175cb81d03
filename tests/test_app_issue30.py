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


# ---- 2. honest visuals -----------------------------------------------------------------------


def record(run_id, name, lr, acc):
    return SimpleNamespace(id=run_id, name=name, status="finished", tags=[], created=0.0, history=[],
                           group_key=run_id, warning=None, config=RunConfig().with_values(**{"train.lr": lr}),
                           metrics={"validation": {"accuracy": acc}, "test": {"accuracy": 0.1}})


def test_scatter_labels_never_overlap():
    # two runs at the same lr, 1 point apart: their names would print over each other
    runs = [record("a", "study: base", 1e-4, 0.565), record("b", "study: dropout 0.05", 1e-4, 0.575),
            record("c", "study: lr 1e-3", 1e-3, 0.30)]
    spec = cmp.param_metric_chart(cmp.runs_frame(runs), "train.lr", "val acc").to_dict()
    rows = {r["name"]: r["label"] for r in next(iter(spec["datasets"].values()))}
    assert rows == {"study: base": "", "study: dropout 0.05": "study: dropout 0.05", "study: lr 1e-3": "study: lr 1e-3"}
    assert "1 name(s) not printed" in spec["title"]["subtitle"]


def test_confusion_difference_legend_says_what_colour_means():
    a, b = np.array([[5, 1], [2, 3]]), np.array([[6, 0], [1, 4]])
    spec = cmp.confusion_difference_chart(cmp.confusion_difference_frame(a, b, False, ["x", "y"]),
                                          class_names=["x", "y"]).to_dict()
    color = spec["layer"][0]["encoding"]["color"]
    assert color["title"] == ["blue: better for B,", "red: worse for B"]
    assert "format" not in color["legend"] and "better for B" in color["legend"]["labelExpr"]  # no "+46%"
    assert spec["title"] == "B - A (clips)"
    assert cmp.cell_note(False).startswith("B minus A, in clips: on the diagonal + means more clips right")


def test_compare_explains_the_difference_cells(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']}"})
    assert f"Each cell's number is {cmp.cell_note(True)}" in texts(at)  # row-normalised by default


def test_class_counts_use_short_names_full_name_on_hover_and_mark_zero():
    spec = charts.class_count_chart({"training": {"clarinet": 2, "distorted electric guitar": 0},
                                     "test": {"clarinet": 1, "distorted electric guitar": 3}}).to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert {r["class"] for r in rows} == {"clarinet", "guitar"}
    assert {"field": "full name", "type": "nominal"} in spec["layer"][0]["encoding"]["tooltip"]
    zero = spec["layer"][1]
    assert zero["mark"]["type"] == "text" and zero["encoding"]["text"] == {"value": "0"}
    assert spec["height"] >= 300 and spec["layer"][0]["encoding"]["color"]["legend"]["orient"] == "top"


def test_run_palette_is_okabe_ito():
    from ui.colors import OKABE_ITO, color_for

    assert [color_for(n) for n in range(1, 9)] == list(OKABE_ITO)
    assert OKABE_ITO[0] == "#0072b2" and "#e69f00" in OKABE_ITO


def test_agreement_sentence_has_no_degenerate_range():
    from ui.flips import agreement_sentence

    assert agreement_sentence([[1, 0.565], [0.565, 1]]) == "The two runs agree on 56.5% of the clips."
    three = [[1, 0.5, 0.6], [0.5, 1, 0.7], [0.6, 0.7, 1]]
    assert agreement_sentence(three) == "Pairwise agreement ranges from 50.0% to 70.0% over 3 pairs."
    assert agreement_sentence([[1]]) == ""


# ---- 5. home ---------------------------------------------------------------------------------


def test_demo_note_agrees_with_its_progress_count():
    from ui.common import demo_ready_message

    note = demo_ready_message(1120, 195, 95.2)
    assert note.startswith("Demo data ready: 1,315 clips rendered in 95 s: 1,120 in training, validation and test")
    assert "195 in the cross-collection program view" in note
    assert demo_ready_message(72, 0, 3) == "Demo data ready: 72 clips in 3 s."


def test_ablation_estimate_counts_runs_and_time():
    from engine.runs.launch import plan_ablation
    from ui.home import ASSUMED_SECONDS_PER_EPOCH, ablation_estimate, rough_duration, seconds_per_epoch

    plan = plan_ablation("study", data="demo", values={"train.epochs": 50})
    text = ablation_estimate(plan, ASSUMED_SECONDS_PER_EPOCH, False)
    assert text.startswith(f"{len(plan)} runs × 50 epochs, {rough_duration(len(plan) * 50 * ASSUMED_SECONDS_PER_EPOCH)}")
    assert "estimate" in text
    done = SimpleNamespace(status="finished", config=SimpleNamespace(data="demo"),
                           history=[{"seconds": 2.0}, {"seconds": 4.0}])
    assert seconds_per_epoch([done], "demo") == (2.0, True)
    assert seconds_per_epoch([done], "other") == (ASSUMED_SECONDS_PER_EPOCH, False)


def test_home_opens_on_getting_started_with_page_links_and_estimates(env, tiny_dataset, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.query_params["data"] = str(tiny_dataset)
    at.run()
    assert not at.exception
    assert [h.value for h in at.subheader][0] == "Getting started"  # first, while no run exists
    links = [e.proto for e in at.main if type(e).__name__ == "PageLink"]
    labels = [link.label for link in links]
    assert any(label.startswith("Train") for label in labels) and any(label.startswith("Compare") for label in labels)
    steps = next(m.value for m in at.markdown if m.value.startswith("1. "))
    assert "**Train**" not in steps and "**Compare**" not in steps
    estimates = [c.value for c in at.caption if " runs × " in c.value]
    assert len(estimates) == 3 and all("estimate" in e for e in estimates)
    assert estimates[0].startswith("10 runs × 50 epochs")
