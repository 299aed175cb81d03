"""Issue 16, readable numbers and pages: one percentage precision in every table, missing values
said in words, seed-group summaries without "± 0.0% (1 runs)", net confusion changes of seed
groups without "7.33333 clips", a Getting started list that knows what is done, and a Train
form that stays open when Start is pressed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from engine.core.config import RunConfig
from engine.compare.verdicts import describe_confusion_difference
from ui import compare as cmp
from ui.common import percent_style


def run(run_id: str, acc: float | None, config: RunConfig = RunConfig()) -> SimpleNamespace:
    metrics = {} if acc is None else {"validation": {"accuracy": acc}, "test": {"accuracy": acc / 2}}
    return SimpleNamespace(id=run_id, name=run_id, metrics=metrics, config=config, history=[], status="finished")


def test_percent_style_shows_one_decimal_and_keeps_the_rates():
    frame = pd.DataFrame({"run": ["a", "b", "c"], "val acc": [0.73333, 0.7, None], "epochs": [3, 4, 5]})
    styled = percent_style(frame, ["val acc", "not a column"])
    html = styled.to_html()
    assert "73.3%" in html and "70.0%" in html and "73.33" not in html and "–" in html
    assert styled.data["val acc"].iloc[0] == 0.73333  # sorting and downloads see the rate


def test_group_summary_says_one_run_and_never_a_zero_spread():
    groups = {"alone": [run("a", 0.7)], "pair": [run("b", 0.6), run("c", 0.8)], "none": [run("d", None)]}
    table = cmp.group_summary(groups).set_index("group")
    assert table.loc["alone", "val acc"] == "70.0% (1 run)"
    assert table.loc["pair", "val acc"] == "70.0% ± 14.1% (2 runs)"
    assert table.loc["none", "val acc"] == "–"
    assert "± 0.0%" not in table.to_string() and "1 runs" not in table.to_string()


def test_seed_group_confusion_changes_have_one_decimal():
    a = np.zeros((8, 8))
    b = np.zeros((8, 8))
    b[0, 1] = 22 / 3  # a mean over 3 seeds
    [sentence] = describe_confusion_difference(a, b, [f"c{k}" for k in range(8)])
    assert "7.3 c0 clips" in sentence and "7.33333" not in sentence


def test_missing_parameter_values_are_said_in_words():
    runs = [run("a", 0.5, RunConfig()), run("b", 0.6, RunConfig().with_values(**{"features.frames": None,
                                                                                  "train.grad_clip": 1.0}))]
    for r, created in zip(runs, (1.0, 2.0)):
        r.tags, r.created, r.group_key, r.warning = (), created, r.id, None
    shown = cmp.shown_params(cmp.runs_frame(runs)).set_index("id")
    assert shown.loc["b", "features.frames"] == "whole clip" and shown.loc["a", "train.grad_clip"] == "off"
    assert shown.loc["a", "features.frames"] == "3"  # text beside "whole clip": one type per column (Arrow)
    diff = cmp.shown_diff(cmp.param_diff(runs))
    assert list(diff.loc["features.frames"]) == ["3", "whole clip"] and "None" not in diff.to_string()


def test_getting_started_is_a_numbered_list_that_knows_what_is_done():
    from ui.home import getting_started as steps

    nothing = steps(False, False, False).split("\n")
    assert [line[:3] for line in nothing] == ["1. ", "2. ", "3. "] and nothing[0].startswith("1. **")
    assert "done" not in "".join(nothing)
    some = steps(True, False, False).split("\n")
    assert some[0].startswith("1. ✓ ~~") and some[0].endswith("(done)") and some[1].startswith("2. **")
    assert "(done)" not in some[2]


def test_home_page_marks_the_dataset_step_done(tiny_dataset, medley_cache, monkeypatch):
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.chdir(root)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(root / "dashboard.py"), default_timeout=120).run()
        assert not at.exception
        steps = next(m.value for m in at.markdown if m.value.startswith("1. "))
        assert steps.startswith("1. ✓ ~~") and "\n2. **" in steps  # data ready; next: a run
    finally:
        st.cache_resource.clear()


def test_start_shows_the_run_and_train_another_brings_the_form_back(tiny_dataset, medley_cache, monkeypatch):
    from pathlib import Path

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import ui.common
    from engine.core.errors import EngineError
    from engine.runs.jobs import JobManager

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.chdir(root)
    st.cache_resource.clear()

    def no_training(config, progress=None):
        raise EngineError("tests do not train")

    manager = JobManager(ui.common._open_store(), data_loader=no_training)
    monkeypatch.setattr(ui.common, "get_manager", lambda: manager)
    try:
        at = AppTest.from_file(str(root / "dashboard.py"), default_timeout=120).run()
        at.switch_page("pages/2_Train.py").run()
        assert at.number_input(key="w.train.lr").value == 1e-4  # the form first, while no run is chosen
        next(b for b in at.button if b.label == "Start training").click().run()
        assert not at.exception and at.selectbox(key="run").value.startswith("r-")  # the new run is shown ...
        assert not [w for w in at.number_input if (w.key or "").startswith("w.")]  # ... in place of the form
        assert not any(b.label == "Start training" for b in at.button)
        next(b for b in at.button if b.label == "Train another run").click().run()
        assert not at.exception and at.selectbox(key="run").value is None
        assert at.number_input(key="w.train.lr").value == 1e-4  # the form is back, with its values
    finally:
        manager.shutdown(timeout=5)
        st.cache_resource.clear()
