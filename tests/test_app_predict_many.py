"""Predict page: one clip through several runs (models x classes panel), in AppTest, with real tiny runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from test_app_predict import TIMEOUT, tiny_runs, wav_bytes

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "4_Predict.py")


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory):
    """(data folder, [run ids], store): two seeds of one configuration and a second configuration."""
    from engine.runs.store import RunStore

    runs = [("first seed 0", {}), ("first seed 1", {"train.seed": 1}), ("second", {"train.lr": 3e-2})]
    with tiny_runs(tmp_path_factory, "predict_many", runs) as (_, data, ids):
        store = RunStore()
        yield data, ids, store
        store.close()


@pytest.fixture
def app(three_runs):
    st.cache_resource.clear()
    st.cache_data.clear()
    yield AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    st.cache_resource.clear()
    st.cache_data.clear()


def test_default_models_are_the_best_of_each_configuration(three_runs, app):
    from ui.multi_predict import best_per_configuration

    _, ids, store = three_runs
    app.run()
    assert not app.exception
    expected = best_per_configuration(store.list_runs(status="finished"))
    assert len(expected) == 2 and ids[2] in expected  # one per configuration
    assert app.multiselect(key="predict_many").value == expected


def test_compare_selection_is_the_default(three_runs, app):
    _, ids, _ = three_runs
    app.session_state["_cmp_sel"] = [ids[0], ids[1], "gone"]
    app.run()
    assert app.multiselect(key="predict_many").value == [ids[0], ids[1]]


def test_one_clip_through_every_chosen_run(three_runs, app):
    _, ids, _ = three_runs
    app.run()
    app.multiselect(key="predict_many").set_value(ids).run()
    app.file_uploader[0].set_value([("long.wav", wav_bytes(7.0, label=4), "audio/wav")]).run()
    assert not app.exception, [e.value for e in app.exception]
    text = "\n".join(str(m.value) for m in app.markdown)
    assert "long.wav: 3 models" in text and re.search(r"(All 3 models say|of 3 models say|The 3 models disagree)", text)
    captions = "\n".join(str(c.value) for c in app.caption)
    assert "one row per model" in captions  # 7 s: window by window for every run
    # the panel's heatmap has one row per (run, class)
    specs = [c.spec for c in app.get("vega_lite_chart")]
    assert any("probability" in str(s) and "first seed 1" in str(s) for s in specs)


def test_probability_frame_and_agreement():
    from ui.multi_predict import agreement, probability_frame, windows_frame

    results = {
        "a": {"label": "flute", "probabilities": {"flute": 0.7, "piano": 0.3},
              "windows": [{"start": 0.0, "duration": 3.0, "probabilities": [0.7, 0.3]}]},
        "b": {"label": "piano", "probabilities": {"flute": 0.4, "piano": 0.6},
              "windows": [{"start": 0.0, "duration": 3.0, "probabilities": [0.4, 0.6]}]},
        "c": {"label": "flute", "probabilities": {"flute": 0.9, "piano": 0.1},
              "windows": [{"start": 0.0, "duration": 3.0, "probabilities": [0.9, 0.1]}]},
    }
    df = probability_frame(results)
    assert len(df) == 6 and df[df.top]["class"].tolist() == ["flute", "piano", "flute"]
    assert agreement(results) == ("flute", 2)
    assert agreement({}) == (None, 0)
    w = windows_frame(results)
    assert w["label"].tolist() == ["flute", "piano", "flute"] and w["end"].tolist() == [3.0] * 3


def test_panel_includes_the_chosen_model_and_its_counts_agree(three_runs, app):
    """The models x classes panel always holds the model chosen above (first), and its
    "right" count agrees with that model's verdict: before, comparing two other runs gave
    "Correct: the true label is ..." above "0 of 2 models are right"."""
    _, ids, store = three_runs
    app.run()
    chosen = app.selectbox(key="run").value
    others = [run_id for run_id in ids if run_id != chosen]
    app.multiselect(key="predict_many").set_value(others).run()
    app.radio(key="predict_source").set_value("Dataset clip").run()
    assert not app.exception, [e.value for e in app.exception]
    text = "\n".join(str(m.value) for m in app.markdown)
    assert ": 3 models**" in text  # the two others and the chosen one
    specs = [str(c.spec) for c in app.get("vega_lite_chart")]
    chosen_name = store.get(chosen).name
    assert any("probability" in s and chosen_name in s for s in specs if "run" in s)
    right = int(re.search(r"(\d+) of 3 models are right", text).group(1))
    verdict_correct = any(s.value.startswith("Correct") for s in app.success)
    assert right >= 1 if verdict_correct else right <= 2


def test_sentence_lists_every_answer_and_never_claims_a_tie_as_a_majority():
    from ui.multi_predict import answers_sentence, panel_runs

    def pred(label: str) -> dict:
        return {"label": label, "probabilities": {}, "windows": []}

    tie = answers_sentence({"a": pred("piano"), "b": pred("flute")}, "piano")
    assert tie == ("The 2 models disagree: 1 says **piano**, 1 says **flute**. "
                   "The true label is **piano**: 1 of 2 models are right.")
    assert "1 of 2 models say" not in tie
    assert answers_sentence({"a": pred("flute"), "b": pred("piano"), "c": pred("flute")}) == \
        "2 of 3 models say **flute**, 1 says **piano**."
    assert answers_sentence({"a": pred("flute"), "b": pred("flute")}) == "All 2 models say **flute**."
    assert panel_runs("r2", ["r1", "r2", "r3", "r1"]) == ["r2", "r1", "r3"]
    assert panel_runs("r2", []) == ["r2"]
