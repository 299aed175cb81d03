"""The home, Dataset and Train pages render in Streamlit's AppTest, and the Train page trains.

Each test gets its own cache folder ($MEDLEY_CACHE) and the 72-clip synthetic dataset from
conftest ($MEDLEY_DATA); st.cache_resource / st.cache_data are cleared around each test so
no store, job manager or dataset leaks between tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.core import paths
from engine.core.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds per script run: the first run imports torch and reads the dataset


def _shutdown_manager() -> None:
    """Stop the job manager's workers if a test made one (before its cache is cleared)."""
    from ui import common

    try:
        manager = common.get_manager()
    except Exception:
        return
    for name in ("shutdown", "stop", "close"):
        method = getattr(manager, name, None)
        if callable(method):
            try:
                method()
            except Exception:
                pass
            return


@pytest.fixture
def app_env(tiny_dataset: Path, medley_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """An isolated environment: tiny dataset as MEDLEY_DATA, empty cache, fresh Streamlit caches."""
    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tiny_dataset
    st.cache_resource.clear()
    st.cache_data.clear()


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=TIMEOUT)
    at.run()
    return at


def train_page_on(run_id: str) -> AppTest:
    """The Train page opened on one run (the home page first, as a visitor arrives), run once."""
    at = _app()
    at.switch_page("pages/2_Train.py")
    at.session_state["run"] = run_id
    at.run()
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def test_home_renders_with_dataset_counts(app_env):
    at = _app()
    assert not at.exception
    assert "Medley-solos-DB at" in _texts(at)
    assert len(at.dataframe) >= 1  # counts per split
    assert [m.label for m in at.metric][:3] == ["running", "queued", "finished"]
    links = [e.proto for e in at.sidebar if type(e).__name__ == "PageLink"]
    assert [(link.label, link.page) for link in links][:2] == [("Home", ""), ("Dataset", "Dataset")]  # URL paths
    assert [link.label for link in links] == ["Home", "Dataset", "Train", "Compare", "Predict", "Search"]


def test_home_with_empty_store_and_no_data_shows_getting_started(medley_cache, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(paths, "DEFAULT_MEDLEY_HOME", medley_cache / "no-such-folder")
    st.cache_resource.clear()
    try:
        at = _app()
        assert not at.exception
        labels = [b.label for b in at.button]
        assert "Make demo data" in labels
        assert "Run the study's ablation" in labels
        assert "built-in demo" in _texts(at)
        steps = next(m.value for m in at.markdown if m.value.startswith("1. "))
        assert steps.count("\n") == 2 and "\n2. " in steps and "done" not in steps  # a real list, nothing done yet
    finally:
        st.cache_resource.clear()


def test_dataset_page_renders(app_env):
    at = _app()
    at.switch_page("pages/1_Dataset.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["clips"] == "72"
    assert metrics["problems"] == "0"
    assert len(at.get("audio")) >= 1  # example clips to play
    assert any("Cross-val program: not available for this dataset" in c.value for c in at.caption)


def test_dataset_page_counts_the_program_view(app_env):
    """A dataset with held-out-program songs (the demo's view): the page says how many, apart."""
    from test_robustness import _add_program_view

    _add_program_view(app_env, n_per_class=2)
    at = _app()
    at.switch_page("pages/1_Dataset.py").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["clips"] == "72"  # the view is not one of the three splits
    view = next(c.value for c in at.caption if "Also 6 clips of songs played by General MIDI programs" in c.value)
    assert "guitar 2, flute 2, piano 2" in view  # per class: the view's classes are uneven on the demo


def test_train_page_trains_and_shows_results(app_env):
    at = _app()
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    assert at.number_input(key="w.model.hidden_size").value == 500  # the study's base
    assert at.selectbox(key="w.features.inputs").value == "librosa_0.7"  # with the study's 2019 inputs
    at.number_input(key="w.train.epochs").set_value(2)
    at.number_input(key="w.model.hidden_size").set_value(8)
    at.number_input(key="w.train.batch_size").set_value(8)
    at.text_input[0].set_value("tiny test run")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, at.exception

    from ui.common import get_store

    runs = get_store().list_runs()
    assert len(runs) == 1 and runs[0].name == "tiny test run"
    deadline = time.time() + 180
    while get_store().get(runs[0].id).status in ("queued", "running"):  # run_every never fires in AppTest
        assert time.time() < deadline, "training did not finish in time"
        time.sleep(0.5)
    at.run()
    assert not at.exception, at.exception
    record = get_store().get(runs[0].id)
    assert record.status == "finished", record.error
    assert record.config.train.epochs == 2 and record.config.model.hidden_size == 8
    assert record.config.features.inputs == "librosa_0.7"
    # one headline (the figure the protocol chooses on: the source view, this dataset has no program view) ...
    assert [m.label for m in at.metric] == ["Accuracy on cross-collection validation (source)"]
    # ... and every figure in one table: validation, the two cross-collection validations and test
    table = next(d.value for d in at.dataframe if "balanced accuracy" in d.value.columns)
    assert list(table["split"]) == ["Validation", "Cross-collection validation",
                                    "Cross-collection validation (source)", "Test"]
    assert "macro-F1" in table.columns
    status = next(s.value for s in at.success if "finished" in s.value)
    assert "after 2 epochs: training " in status and ", preparing features " in status  # apart (issue #30)
    from ui import defaults  # the Train page opens its charts as every other page does
    toggles = {t.label: t.value for t in at.toggle}
    assert toggles["log-scale loss"] is defaults.LOG_SCALE_LOSS
    assert toggles["row-normalised confusion matrices"] is defaults.NORMALISE_CONFUSION
    _shutdown_manager()


@pytest.mark.parametrize("fast", [True, False])
def test_train_page_bfloat16_choice_warns_only_where_it_is_slow(app_env, monkeypatch, fast):
    import engine.learn.model

    monkeypatch.setattr(engine.learn.model, "fast_bfloat16", lambda device: fast)
    at = _app()
    at.switch_page("pages/2_Train.py").run()
    assert not at.warning
    at.selectbox(key="w.train.precision").set_value("bfloat16").run()
    assert not at.exception, at.exception
    warned = [w.value for w in at.warning if "bfloat16" in w.value]
    assert bool(warned) is not fast, warned
    if not fast:
        assert "slower than float32" in warned[0]


def test_train_page_shows_a_failed_runs_error(app_env):
    from engine.core.config import RunConfig
    from ui.common import get_store

    store = get_store()
    run_id = store.create_run(RunConfig(), name="broken")
    store.set_status(run_id, "running")
    store.set_status(run_id, "diverged", error="training diverged: the loss became nan at epoch 1")
    at = train_page_on(run_id)
    assert not at.exception
    assert any("the loss became nan" in e.value for e in at.error)
    assert any("No metrics" in i.value for i in at.info)


def test_train_page_restarts_a_cancelled_run(app_env):
    from engine.core.config import RunConfig
    from ui.common import get_store

    store = get_store()
    config = RunConfig(data=str(app_env)).with_values(**{"model.hidden_size": 8, "train.epochs": 1,
                                                         "train.batch_size": 16})
    run_id = store.create_run(config, name="stopped")
    store.set_status(run_id, "running")
    store.set_status(run_id, "cancelled")
    at = train_page_on(run_id)
    labels = [b.label for b in at.button]
    assert "Resume (starts over: no checkpoint)" in labels
    next(b for b in at.button if b.label == "Start again as a new run").click().run()
    assert not at.exception, at.exception
    new_id = at.session_state["run"]
    assert new_id != run_id and store.get(new_id).config == config
    deadline = time.time() + 120
    while store.get(new_id).status in ("queued", "running"):
        assert time.time() < deadline, "the restarted run did not finish in time"
        time.sleep(0.5)
    assert store.get(new_id).status == "finished", store.get(new_id).error
    _shutdown_manager()


def _wait_finished(store, run_ids, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while any(store.get(r).status in ("queued", "running") for r in run_ids):  # run_every never fires in AppTest
        assert time.time() < deadline, "runs did not finish in time"
        time.sleep(0.5)


def test_train_page_offers_robustness_options_and_shows_cross_collection_validation(app_env):
    at = _app()
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    for key in ("w.train.augment", "w.train.augment_views", "w.train.time_mask", "w.train.freq_mask",
                "w.features.clip_norm"):
        assert at.session_state[key] is not None
    helps = {w.label: w.help for w in [*at.multiselect, *at.number_input, *at.checkbox]}
    assert "speed" in helps["audio augmentation"] and "SpecAugment" in helps["time mask (frames)"]
    assert "mean and std" in helps["Normalise each clip (per-clip mean/variance)"]
    at.multiselect(key="w.train.augment").set_value(["eq", "gain"])
    at.selectbox(key="w.model.arch").set_value("sequence").run()  # the copies' count and pooling now apply
    at.number_input(key="w.train.augment_views").set_value(1)
    at.number_input(key="w.train.time_mask").set_value(1)
    at.checkbox(key="w.features.clip_norm").check()
    at.selectbox(key="w.model.pooling").set_value("stats")
    at.number_input(key="w.train.epochs").set_value(1)
    at.number_input(key="w.model.hidden_size").set_value(4)
    at.number_input(key="w.train.batch_size").set_value(16)
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception, at.exception

    from ui.common import get_store

    [run] = get_store().list_runs()
    config = run.config
    assert (config.train.augment, config.train.augment_views, config.train.time_mask) == ("gain,eq", 1, 1)  # canonical order
    assert config.features.clip_norm and config.model.pooling == "stats"
    _wait_finished(get_store(), [run.id])
    at.run()
    assert not at.exception, at.exception
    assert get_store().get(run.id).status == "finished", get_store().get(run.id).error
    assert {"validation_shift", "validation_source"} <= set(get_store().get(run.id).metrics)
    splits = list(next(d.value for d in at.dataframe if "balanced accuracy" in d.value.columns)["split"])
    assert {"Cross-collection validation", "Cross-collection validation (source)"} <= set(splits)
    assert any("(program, 6 of 8 classes)**: n/a" in c.value for c in at.caption)  # no held-out programs here
    _shutdown_manager()


def test_home_queues_the_robustness_ablation_and_tabulates_it(app_env, monkeypatch):
    from engine.learn import presets
    from engine.core.config import RunConfig

    tiny = RunConfig().with_values(**{"features.frames": 4, "model.arch": "sequence", "model.hidden_size": 4,
                                      "train.epochs": 1, "train.batch_size": 16, "train.augment_views": 1})
    monkeypatch.setattr(presets, "RECOMMENDED", tiny)
    monkeypatch.setattr(presets, "ROBUSTNESS_SEEDS", (0, 1))
    at = _app()
    next(b for b in at.button if b.label == "Run the robustness ablation").click().run()
    assert not at.exception, at.exception

    from ui.common import get_store

    runs = get_store().list_runs()
    rows = 1 + len(presets.ROBUSTNESS_OPTIONS)
    assert len(runs) == 2 * rows and all("robustness" in r.tags for r in runs)
    assert {r.config.train.seed for r in runs} == {0, 1}
    assert {presets.ablation_row(r.name) for r in runs} == {"recommended", *(f"+ {o}" for o in presets.ROBUSTNESS_OPTIONS)}
    _wait_finished(get_store(), [r.id for r in runs], seconds=400)
    at.run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "cross-val" in d.value.columns)
    ended = [(r.name, r.status, r.error) for r in get_store().list_runs()]
    assert len(table) == rows and list(table["seeds done"]) == [2] * rows, ended
    assert table["cross-val"].between(0, 1).all() and table["cross-val source"].between(0, 1).all()
    assert table["cross-val program"].isna().all()  # the synthetic dataset has no held-out programs ...
    choice = next(c.value for c in at.caption if "Protocol choice:" in c.value)
    assert "on cross-val source" in choice and "cross-val program not available for this dataset" in choice  # ... said
    _shutdown_manager()


def test_train_page_live_view_of_a_running_run(app_env):
    """A run training elsewhere (this process owns it, so it stays 'running'): the live view
    shows the store's progress line and both charts, with no exception."""
    from ui.common import get_store

    store = get_store()
    run_id = store.create_run(RunConfig().with_values(**{"train.epochs": 5}), name="live one")
    store.set_status(run_id, "running", device="cpu")
    for epoch in (1, 2):
        store.append_epoch(run_id, {"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.3,
                                    "seconds": float(epoch)}, [1.0, 0.9])
    at = _app()
    at.switch_page("pages/2_Train.py")
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    text = " ".join(str(p.proto.text) for p in at.get("progress"))
    assert "running: epoch 2/5" in text
    assert len(at.get("vega_lite_chart")) == 2
    store.set_status(run_id, "cancelled")


def test_train_page_and_cli_make_the_same_config_for_the_same_choices(app_env, monkeypatch):
    """Issue 17: the Train page's widgets go through the engine's one parser, as CLI flags do."""
    from engine.cli import build_parser, config_from_args
    from engine.core.errors import EngineError
    from engine.runs.jobs import JobManager
    from engine.learn.presets import PRESETS
    import ui.common
    from ui.common import get_store

    def no_training(config, progress=None):
        raise EngineError("tests do not train")

    manager = JobManager(get_store(), data_loader=no_training)
    monkeypatch.setattr(ui.common, "get_manager", lambda: manager)
    try:
        at = _app()
        at.switch_page("pages/2_Train.py").run()
        at.selectbox(key="preset").set_value("recommended").run()
        at.number_input(key="w.train.lr").set_value(0.003)
        at.radio(key="w.features.frames").set_value("whole clip")
        at.checkbox(key="w.features.chroma").check()
        at.multiselect(key="w.train.augment").set_value(["gain", "eq"])
        at.number_input(key="w.train.grad_clip").set_value(0.5)
        at.checkbox(key="w.train.standardize").uncheck()
        at.selectbox(key="w.model.pooling").set_value("stats")
        at.number_input(key="w.model.hidden_size").set_value(64)
        at.selectbox(key="w.train.optimizer").set_value("sgd").run()  # momentum applies to SGD only
        at.number_input(key="w.train.momentum").set_value(0.9)
        next(b for b in at.button if b.label == "Start training").click().run()
        assert not at.exception, at.exception
        [run] = get_store().list_runs()
        args = build_parser().parse_args(["train", "--preset", "recommended", "--lr", "0.003", "--frames", "all",
                                          "--chroma", "--augment", "eq,gain", "--grad-clip", "0.5",
                                          "--no-standardize", "--pooling", "stats", "--hidden", "64",
                                          "--optimizer", "sgd", "--momentum", "0.9"])
        assert run.config == config_from_args(args, PRESETS["recommended"])
        assert "lr 3e-3" in run.name and "SGD" in run.name  # named by what differs from the preset
    finally:
        manager.shutdown(timeout=5)
