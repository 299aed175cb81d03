"""Issue #30 on the Train page: only the inputs that apply to the chosen optimizer, architecture,
features and augmentation (plain labels, the jargon in their help); after Start the run takes
the page; a finished run has one headline figure, the one the protocol chooses on, named, and
the rest in a table; the live accuracy chart names its lines."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from engine.core.config import RunConfig
from engine.learn.metrics import evaluate
from engine.learn.presets import PRESETS
from ui import train_form

from test_app_pages import _app, _shutdown_manager, app_env, train_page_on  # noqa: F401 (app_env: a fixture)

OPTIONAL = {"w.train.momentum", "w.train.rho", "w.train.eps", "w.model.pooling", "w.model.bidirectional",
            "w.model.extra_hidden", "w.train.augment_views", "w.train.augment_seed"}  # none applies to the study's base


def drawn(at) -> set[str]:
    """Keys of the form's widgets on the page."""
    widgets = [*at.number_input, *at.selectbox, *at.checkbox, *at.radio, *at.multiselect]
    return {w.key for w in widgets if (w.key or "").startswith("w.")}


def train_form_page():
    at = _app()
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception, at.exception
    return at


def test_only_the_inputs_that_apply_are_drawn(app_env):
    at = train_form_page()  # the study's base: Adam, the study model, spectral features, no augmentation
    assert not drawn(at) & OPTIONAL, drawn(at) & OPTIONAL
    assert {"w.train.lr", "w.model.hidden_size", "w.features.frames", "w.features.clip_norm"} <= drawn(at)
    at.selectbox(key="w.train.optimizer").set_value("sgd").run()
    assert "w.train.momentum" in drawn(at) and not {"w.train.rho", "w.train.eps"} & drawn(at)
    at.selectbox(key="w.train.optimizer").set_value("adadelta").run()
    assert {"w.train.rho", "w.train.eps"} <= drawn(at) and "w.train.momentum" not in drawn(at)
    at.selectbox(key="w.model.arch").set_value("sequence").run()
    assert {"w.model.pooling", "w.model.bidirectional"} <= drawn(at) and "w.model.extra_hidden" not in drawn(at)
    at.selectbox(key="w.model.arch").set_value("study_2plus1").run()
    assert "w.model.extra_hidden" in drawn(at) and "w.model.pooling" not in drawn(at)
    at.multiselect(key="w.train.augment").set_value(["gain"]).run()
    assert {"w.train.augment_views", "w.train.augment_seed"} <= drawn(at)
    assert {"w.features.chroma", "w.features.deltas"} <= drawn(at)  # added to spectral frames ...
    at.selectbox(key="w.features.representation").set_value("waveform").run()
    assert not {"w.features.chroma", "w.features.deltas"} & drawn(at)  # ... not to raw waveform
    assert not at.exception, at.exception


def test_labels_are_plain_and_the_jargon_is_in_the_help(app_env):
    at = train_form_page()
    widgets = [*at.number_input, *at.selectbox, *at.checkbox, *at.radio, *at.multiselect]
    by_key = {w.key: w for w in widgets if w.key}
    labels = " ".join(w.label for w in widgets)
    for jargon in ("CMVN", "librosa", "rho", "inputs as"):
        assert jargon not in labels, jargon
    assert "CMVN" in by_key["w.features.clip_norm"].help
    assert by_key["w.features.clip_norm"].label == "Normalise each clip (per-clip mean/variance)"
    assert "librosa_0.7" in by_key["w.features.inputs"].help
    # the less-used inputs wait in "More settings"
    assert [e.label for e in at.expander][0] == "More settings"
    inside = {w.key for w in at.expander[0].number_input} | {w.key for w in at.expander[0].checkbox}
    assert {"w.train.seed", "w.train.weight_decay", "w.train.grad_clip", "w.train.standardize"} <= inside
    assert "w.train.lr" not in inside


def test_an_input_that_does_not_apply_keeps_the_presets_value():
    base = PRESETS["study"]
    form = train_form.widget_values(base) | {"w.train.momentum": 0.9, "w.train.rho": 0.5,
                                             "w.model.pooling": "stats", "w.train.augment_views": 9}
    config = train_form.config_from_form(form, base, "")
    assert config == base  # Adam, the study model, no augmentation: none of the four changes anything
    sgd = train_form.config_from_form(form | {"w.train.optimizer": "sgd"}, base, "")
    assert (sgd.train.optimizer, sgd.train.momentum, sgd.train.rho) == ("sgd", 0.9, base.train.rho)


@pytest.mark.parametrize("values", [PRESETS["study"].flat(), PRESETS["recommended"].flat()])
def test_what_does_not_apply_follows_the_config(values):
    hidden = train_form.not_applicable(values)
    assert "train.momentum" in hidden and {"train.rho", "train.eps"} <= hidden  # Adam in both presets
    sequence = values["model.arch"] == "sequence"
    assert ("model.pooling" in hidden) is not sequence and ("model.bidirectional" in hidden) is not sequence
    assert "model.extra_hidden" in hidden
    assert not {"train.lr", "train.epochs", "model.hidden_size", "features.frames"} & hidden


def test_the_linear_model_hides_the_lstm_settings_and_keeps_the_presets_values():
    base = PRESETS["recommended"]
    values = base.with_values(**{"model.arch": "linear"}).flat()
    assert {"model.hidden_size", "model.num_layers", "model.pooling", "model.bidirectional"} <= train_form.not_applicable(values)
    form = train_form.widget_values(base) | {"w.model.arch": "linear", "w.model.hidden_size": 7}
    config = train_form.config_from_form(form, base, "")
    assert config.model.arch == "linear" and config.model.hidden_size == base.model.hidden_size


def test_after_start_the_run_takes_the_page(app_env, monkeypatch):
    import ui.common
    from engine.core.errors import EngineError
    from engine.runs.jobs import JobManager
    from ui.common import get_store

    def no_training(config, progress=None):
        raise EngineError("tests do not train")

    manager = JobManager(get_store(), data_loader=no_training)
    monkeypatch.setattr(ui.common, "get_manager", lambda: manager)
    try:
        at = train_form_page()
        next(b for b in at.button if b.label == "Start training").click().run()
        assert not at.exception, at.exception
        assert at.selectbox(key="run").value.startswith("r-")
        assert not drawn(at), drawn(at)  # no form: the run at the top
        assert [b.label for b in at.button][0] == "Train another run"
        assert any(m.value.startswith("### ") and " Run " in m.value for m in at.markdown)
    finally:
        manager.shutdown(timeout=5)


# ---- a finished run: one headline, the rest in a table -------------------------------------------------


def finished_run(store, splits: tuple[str, ...], prepare_seconds: float | None = 44.0) -> str:
    """A finished run with real metrics on `splits` (16 clips each), 3 epochs of 1.7 s."""
    rng = np.random.default_rng(0)
    y = np.arange(16) % 8
    probs = rng.dirichlet(np.ones(8), size=16)
    probs[np.arange(16), y] += 0.4 * (np.arange(16) % 2)
    probs /= probs.sum(1, keepdims=True)
    run_id = store.create_run(RunConfig().with_values(**{"train.epochs": 3}), name="done")
    store.set_status(run_id, "running", device="cpu")
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "val_accuracy": 0.2 * e,
                "val_source_accuracy": 0.1 * e, "seconds": 1.7 * e} for e in (1, 2, 3)]
    for record in history:
        store.append_epoch(run_id, record, [1.0, 0.9])
    if prepare_seconds is not None:
        store.add_prepare_seconds(run_id, prepare_seconds)
    ids = [f"c{k}" for k in range(16)]
    store.save_result(run_id, SimpleNamespace(
        status="finished", error=None, device="cpu", state_dict={}, standardizer=None, best_epoch=3,
        history=history, step_losses=[1.0, 0.9] * 3, predictions={s: {"ids": ids, "y": y.tolist(),
                                                                      "probs": probs.tolist()} for s in splits},
        metrics={s: evaluate(y, probs) for s in splits}))
    return run_id


def test_a_finished_run_has_one_headline_named_and_the_rest_in_a_table(app_env):
    from ui.common import get_store

    store = get_store()
    splits = ("validation", "validation_shift", "validation_source", "validation_program", "test")
    run_id = finished_run(store, splits)
    at = train_page_on(run_id)
    assert not at.exception, at.exception
    [headline] = at.metric  # one big figure: the program view's accuracy, which the protocol chooses on
    assert headline.label == "Accuracy on cross-collection validation (program, 6 of 8 classes)"
    assert headline.value == f"{100 * store.get(run_id).metrics['validation_program']['accuracy']:.1f}%"
    assert "protocol" in headline.help
    table = next(d.value for d in at.dataframe if "balanced accuracy" in d.value.columns)
    assert len(table) == 5 and list(table["clips"]) == [16] * 5
    assert table["accuracy"].between(0, 1).all()
    status = next(s.value for s in at.success if "finished" in s.value)
    assert "after 3 epochs: training 5 s, preparing features 44 s" in status


def test_the_headline_falls_back_to_the_source_view_then_validation(app_env):
    from ui import run_view
    from ui.common import get_store

    store = get_store()
    without_program = finished_run(store, ("validation", "validation_source", "test"), prepare_seconds=None)
    at = train_page_on(without_program)
    assert [m.label for m in at.metric] == ["Accuracy on cross-collection validation (source)"]
    # stored before preparation was recorded apart: what is known, said plainly
    status = next(s.value for s in at.success if "finished" in s.value)
    assert "training 5 s (" in status and "preparing features included" in status
    assert run_view.headline({"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.9}}) == (
        "validation", "Validation", 0.5)  # never test
    assert run_view.headline({"test": {"accuracy": 0.9}}) is None


def test_the_live_accuracy_chart_names_its_lines(app_env):
    from ui.common import get_store
    from ui.live import LiveCharts

    store = get_store()
    run_id = store.create_run(RunConfig().with_values(**{"train.epochs": 5}), name="live")
    store.set_status(run_id, "running", device="cpu")
    store.append_epoch(run_id, {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.3,
                                "val_source_accuracy": 0.2, "seconds": 0.4}, [1.0, 0.9])
    specs = LiveCharts().update(store, run_id, color="#0072B2")  # one epoch of a few seconds: drawn already
    text = json.dumps(specs["accuracy"])
    assert "validation accuracy (solid)" in text and "cross-collection validation (source) (dashed)" in text
    assert '"legend"' in text
    store.set_status(run_id, "cancelled")
    _shutdown_manager()


def test_the_sidebar_and_the_page_read_one_snapshot_of_progress(monkeypatch):
    """Both call ui.common.job_progress on timers of one pace: within a snapshot's life they get the
    same moment (the same stage and fraction), even when the worker moved on in between."""
    import ui.common as common
    from engine.runs.progress import Progress

    p = Progress("r-1", phase="loading data", prep_fraction=0.2, prep_stage="1 of 4: reading the dataset")
    manager = SimpleNamespace(all_progress=lambda: {"r-1": p}, queued_behind=lambda run_id: [])
    monkeypatch.setattr(common, "get_manager", lambda: manager)
    monkeypatch.setattr(common, "get_store", lambda: SimpleNamespace(get=lambda run_id: SimpleNamespace(name="one")))
    common.forget_progress_snapshot()
    sidebar = common.job_progress()
    p.prep_fraction, p.prep_stage = 0.6, "3 of 4: cross-collection validation (channel)"  # the worker moves on
    page = common.job_progress()
    assert page == sidebar and "20% · step 1 of 4: reading the dataset" in page[0]["message"]
    common.forget_progress_snapshot()  # a full page run, a cancel: read afresh
    assert "60% · step 3 of 4" in common.job_progress()[0]["message"]
    monkeypatch.setattr(common, "SNAPSHOT_S", 0.0)  # an expired snapshot is read afresh too
    p.prep_fraction = 0.7
    assert "70%" in common.job_progress()[0]["message"]
    common.forget_progress_snapshot()
