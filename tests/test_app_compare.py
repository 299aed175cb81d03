"""The Compare page (pages/3_Compare.py) in AppTest, and the helpers of ui/compare.py.

Runs are written straight into a temporary RunStore with fake results: predictions are
random probabilities with some skill, metrics come from engine.learn.metrics.evaluate on them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import ui.common
from engine.core.config import RunConfig
from engine.core.errors import ConfigError, EngineError
from engine.learn.metrics import evaluate
from engine.learn.presets import STUDY_ABLATION_CHANGES, STUDY_BASE, STUDY_REPORTED
from engine.runs.store import RunStore
from engine.compare import stats, verdicts
from engine.core.labels import SHORT_NAMES
from ui import compare as cmp
from ui import significance as sig

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/3_Compare.py"


# ---- fake runs ------------------------------------------------------------------------------


def fake_predictions(rng: np.random.Generator, ids: list[str], y: np.ndarray, skill: float) -> dict:
    """Probabilities whose argmax is right about `skill` of the time (plus chance)."""
    logits = rng.normal(size=(len(y), 8))
    logits[np.arange(len(y)), y] += skill * 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"ids": ids, "y": y.tolist(), "probs": probs.round(4).tolist()}


def add_run(store: RunStore, config: RunConfig, name: str, *, skill: float = 0.5, seed: int = 0,
            tags=(), status: str = "finished", splits: dict | None = None, epochs: int = 5) -> str:
    """A run in `store` with a fake result; `splits` = {split: (ids, y)} shared between runs."""
    run_id = store.create_run(config, name=name, tags=tags)
    if status != "finished":
        store.set_status(run_id, status)
        return run_id
    rng = np.random.default_rng(seed)
    predictions = {split: fake_predictions(rng, ids, y, skill) for split, (ids, y) in splits.items()}
    metrics = {split: evaluate(np.asarray(p["y"]), np.asarray(p["probs"])) for split, p in predictions.items()}
    history = [
        {"epoch": e, "train_loss": 2.0 / e + rng.uniform(0, 0.1), "val_loss": 2.1 / e + rng.uniform(0, 0.1),
         "val_accuracy": min(1.0, skill * e / epochs + rng.uniform(0, 0.05)), "seconds": 1.5 * e}
        for e in range(1, epochs + 1)
    ]
    result = SimpleNamespace(status="finished", error=None, device="cpu", state_dict={}, standardizer=None,
                             best_epoch=epochs, history=history, step_losses=[1.0] * 10, metrics=metrics,
                             predictions=predictions)
    store.save_result(run_id, result)
    return run_id


def make_splits(n: int = 48, seed: int = 0, ids: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("validation", "test"):
        split_ids = (ids or {}).get(split) or [f"{split[:3]}-{k:04d}" for k in range(n)]
        y = np.arange(len(split_ids)) % 8
        rng.shuffle(y)
        out[split] = (split_ids, y)
    return out


def tiny_ids(root: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """(uuids, labels) per split of a tiny dataset written by conftest's make_tiny_dataset."""
    meta = pd.read_csv(root / "annotation" / "Medley-solos-DB_metadata.csv")
    return {s: (meta[meta.subset == s].uuid4.tolist(), meta[meta.subset == s].instrument_id.to_numpy())
            for s in ("validation", "test")}


@pytest.fixture
def env(medley_cache: Path):
    """An isolated cache ($MEDLEY_CACHE), fresh Streamlit caches, and the store the app will open."""
    st.cache_resource.clear()
    st.cache_data.clear()
    store = RunStore()
    yield store
    store.close()
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def populated(env: RunStore, make_tiny_dataset):
    """Four runs: A (lr 1e-4), B seed 0 and B seed 1 (one seed group, lr 1e-3, better), one failed."""
    data = str(make_tiny_dataset(per_class=2))
    splits = tiny_ids(Path(data))
    base = RunConfig(data=data).with_values(**{"train.epochs": 5})
    b_conf = base.with_values(**{"train.lr": 1e-3})
    ids = {
        "a": add_run(env, base, "alpha", skill=0.2, seed=1, splits=splits, tags=("study",)),
        "b0": add_run(env, b_conf, "beta s0", skill=0.9, seed=2, splits=splits),
        "b1": add_run(env, b_conf.with_values(**{"train.seed": 1}), "beta s1", skill=0.8, seed=3, splits=splits),
        "f": add_run(env, base.with_values(**{"model.dropout": 0.5}), "broken", status="failed"),
    }
    return SimpleNamespace(store=env, ids=ids, data=data)


def open_compare(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page(PAGE)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def table_names(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["name"])


# ---- AppTest --------------------------------------------------------------------------------


def test_empty_store_renders(env):
    at = open_compare()
    assert "No runs yet" in texts(at)


def test_table_lists_runs_and_filters_by_status(populated):
    at = open_compare()
    assert sorted(table_names(at)) == ["alpha", "beta s0", "beta s1", "broken"]
    # the run tagged "study" is shown beside the study's reported number
    assert "Our study runs beside" in texts(at)
    study = [df.value for df in at.dataframe if "study row" in df.value.columns][0]
    assert list(study["study row"]) == ["base"] and study.loc[0, "study val acc"] == 0.78
    at.multiselect(key="cmp_status").set_value(["failed"]).run()
    assert not at.exception
    assert table_names(at) == ["broken"]
    at.multiselect(key="cmp_status").set_value([]).run()
    at.selectbox(key="cmp_param").set_value("train.lr").run()
    at.multiselect(key="cmp_values").set_value(["0.001"]).run()
    assert sorted(table_names(at)) == ["beta s0", "beta s1"]


def test_url_selection_shows_comparison(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']}"})
    assert at.multiselect(key="runs").value == [ids["a"], ids["b0"]]
    charts = at.get("vega_lite_chart")
    # loss + accuracy curves, two heatmaps, per-class bars, difference heatmap, gap bars, scatter
    assert len(charts) >= 8
    sentence = texts(at)
    # the verdict is the engine's (the function `python -m engine compare` calls), on the page's split
    runs = {i: populated.store.get(i) for i in (ids["a"], ids["b0"])}
    load = populated.store.load_predictions
    for split in ("validation", "test"):
        if split == "test":
            at.radio(key="cmp_split").set_value("test").run()
            assert not at.exception
            sentence = texts(at)
            assert verdicts.TEST_SPLIT_NOTE in sentence
        else:
            assert at.radio(key="cmp_split").value == "validation"  # validation first
            assert verdicts.TEST_SPLIT_NOTE not in sentence
        result = stats.compare_run_groups([runs[ids["a"]]], [runs[ids["b0"]]], lambda r: load(r.id), split=split)
        assert result["split"] == split and result["scope"] == "runs"
        assert verdicts.verdict(result, "A", "B") in sentence
        assert "not two configurations" in sentence  # one run per side: scoped to the two models
        conf = [np.asarray(runs[i].metrics[split]["confusion"]) for i in (ids["a"], ids["b0"])]
        lines = verdicts.describe_confusion_difference(*conf, SHORT_NAMES)
        assert lines and all(line in sentence for line in lines)
        assert any(f"{split} accuracy" in df.value.columns and "95% CI" in df.value.columns for df in at.dataframe)
    # the differing parameter (lr) is in the diff table
    diff_tables = [df.value for df in at.dataframe if df.value.index.name == "parameter"]
    assert diff_tables and list(diff_tables[0].index) == ["train.lr"]
    # (that the choice is written back to the URL, without a history entry: test_e2e_browser)


def test_seed_group_and_mistakes_audio(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']},{ids['b1']}"})
    assert at.toggle(key="cmp_grouped").value is True
    assert any("group" in df.value.columns and "beta s0 (2 seeds)" in set(df.value["group"]) for df in at.dataframe)
    words = texts(at)
    assert "Seed-to-seed spread" in words and "unit of replication is the seed" in words
    assert "Too few seeds to resolve a difference: with 1 and 2 runs" in words  # 1 v 2 cannot resolve much
    assert "Confusion difference B - A (validation, mean over seeds)" in words
    # listen to the mistakes: pick the actual/predicted cell of one of alpha's mistakes
    pred = populated.store.load_predictions(ids["a"])["test"]
    probs = np.asarray(pred["probs"])
    wrong = int(np.flatnonzero(probs.argmax(1) != np.asarray(pred["y"]))[0])
    at.selectbox(key="mis_run").set_value(ids["a"]).run()
    at.selectbox(key="mis_split").set_value("test").run()
    at.selectbox(key="mis_actual").set_value(int(pred["y"][wrong])).run()
    at.selectbox(key="mis_pred").set_value(int(probs[wrong].argmax())).run()
    assert not at.exception
    assert len(at.get("audio")) >= 1


def test_ablation_builder_queues_runs(populated, monkeypatch):
    from engine.runs.jobs import JobManager

    def no_training(config, progress=None):
        raise EngineError("tests do not train")

    manager = JobManager(populated.store, data_loader=no_training)
    monkeypatch.setattr(ui.common, "get_manager", lambda: manager)
    try:
        at = open_compare()
        before = len(populated.store.list_runs())
        at.multiselect(key="abl_params").set_value(["train.lr", "model.dropout"]).run()
        at.text_input(key="abl_train.lr").input("1e-3, 1e-4").run()
        at.text_input(key="abl_model.dropout").input("0.1, 0.3, 0.5").run()
        assert at.button(key="abl_queue").label == "Queue 6 runs"
        at.button(key="abl_queue").click().run()
        assert not at.exception
        runs = populated.store.list_runs()
        assert len(runs) == before + 6
        new = runs[:6]
        assert {(r.config.train.lr, r.config.model.dropout) for r in new} == {
            (lr, d) for lr in (1e-3, 1e-4) for d in (0.1, 0.3, 0.5)}
        at.number_input(key="abl_seeds").set_value(4).run()
        at.button(key="abl_repeat").click().run()
        runs = populated.store.list_runs()
        assert len(runs) == before + 10 and len({r.group_key for r in runs[:4]}) == 1
        at.button(key="abl_study").click().run()
        assert not at.exception, at.exception
        assert len(populated.store.list_runs(tag="study")) == 1 + len(STUDY_ABLATION_CHANGES), [
            e.value for e in (*at.error, *at.warning)]
        # a bad value is reported, nothing queued
        at.text_input(key="abl_model.dropout").input("0.1, 2").run()
        assert at.error and at.button(key="abl_queue").disabled
    finally:
        manager.shutdown(timeout=5)


def test_page_renders_200_runs(env):
    """200 runs list without error (their render time is measured in benchmarks/pages.py)."""
    splits = make_splits(n=40)
    base = RunConfig()
    rng = np.random.default_rng(0)
    for k in range(200):
        config = base.with_values(**{"train.lr": float(rng.choice([1e-3, 1e-4, 1e-5])),
                                     "model.dropout": float(rng.choice([0.05, 0.1, 0.5])), "train.seed": k})
        add_run(env, config, f"run {k}", skill=float(rng.uniform(0.1, 0.9)), seed=k, splits=splits, epochs=20)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception
    assert len(at.dataframe[0].value) == 200


# ---- ui/compare.py ---------------------------------------------------------------------------


def record(run_id: str, config: RunConfig, *, name: str | None = None, status: str = "finished", tags=(),
           metrics: dict | None = None, history=None, group: str | None = None):
    return SimpleNamespace(id=run_id, name=name or run_id, status=status, tags=list(tags), created=0.0,
                           config=config, group_key=group or config.with_values(**{"train.seed": 0}).digest(),
                           metrics=metrics or {}, history=history or [], finished=1.0)


def test_param_diff_shows_only_differing_params():
    a = record("a", RunConfig())
    b = record("b", RunConfig().with_values(**{"train.lr": 1e-3, "features.frames": None}))
    c = record("c", RunConfig().with_values(**{"train.lr": 1e-3}))
    diff = cmp.param_diff([a, b, c])
    assert list(diff.index) == ["features.frames", "train.lr"]
    assert list(diff.loc["train.lr"]) == ["0.0001", "0.001", "0.001"]
    assert list(diff.loc["features.frames"]) == ["3", "None", "3"]
    assert cmp.param_diff([a, record("a2", RunConfig())]).empty


def test_runs_frame_and_filters():
    m = {"validation": {"accuracy": 0.8}, "test": {"accuracy": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.3}}
    runs = [
        record("a", RunConfig(), status="finished", tags=["study"], metrics=m),
        record("b", RunConfig().with_values(**{"train.lr": 1e-3}), status="failed"),
        record("c", RunConfig().with_values(**{"train.optimizer": "sgd"}), status="finished", tags=["x"]),
    ]
    df = cmp.runs_frame(runs)
    assert df.loc[0, "val-test gap"] == pytest.approx(0.3)
    assert np.isnan(df.loc[1, "val acc"])
    assert list(cmp.filter_runs(df, ["finished"])["id"]) == ["a", "c"]
    assert list(cmp.filter_runs(df, tag="study")["id"]) == ["a"]
    assert list(cmp.filter_runs(df, param="train.lr", values=["0.001"])["id"]) == ["b"]
    assert list(cmp.filter_runs(df, ["finished"], param="train.optimizer", values=["adam"])["id"]) == ["a"]
    assert list(cmp.filter_runs(df)["id"]) == ["a", "b", "c"]
    assert cmp.param_values(df, "train.lr") == ["0.0001", "0.001"]
    assert cmp.all_tags(df) == ["study", "x"]
    assert "train.optimizer" in cmp.table_columns(df)  # key parameter
    assert cmp.table_columns(df)[:5] == ["name", "status", *cmp.HEADLINE_METRICS]  # a phone's first screen
    assert "data" not in cmp.table_columns(df)  # same everywhere, not a key parameter
    program = {**m, "validation_program": {"accuracy": 0.6}}  # demo runs: the protocol chooses on the program view
    demo = cmp.runs_frame([record("a", RunConfig(), status="finished", metrics=program),
                           record("b", RunConfig(), status="failed")])
    assert cmp.table_columns(demo)[:5] == ["name", "status", "val acc", "cross-val program acc", "test acc"]
    assert "cross-val source acc" in cmp.table_columns(demo)  # still listed, after the parameters
    mixed = cmp.runs_frame([record("a", RunConfig(), status="finished", metrics=program),
                            record("c", RunConfig(), status="finished", metrics=m)])
    assert cmp.headline_metrics(mixed) == cmp.HEADLINE_METRICS  # as protocol_split: not every run has the view


def test_run_ids_in_url():
    labels = {"r-1a": "lr 1e-3", "r-2b": "seed 2 of lr 1e-3", "r-3c": "a, b"}
    resolve = cmp.resolve_runs
    assert resolve(["lr 1e-3", "seed 2 of lr 1e-3"], labels) == (["r-1a", "r-2b"], [])  # what the widget writes
    assert resolve([" r-1a,r-2b,,r-1a ", "zz"], labels) == (["r-1a", "r-2b"], ["zz"])  # an old comma link
    assert resolve(["a, b", "r-2b"], labels) == (["r-3c", "r-2b"], [])  # a label with a comma
    assert resolve(["old name (r-3c)", "old, name"], labels) == (["r-3c"], ["old, name"])  # renamed since
    assert resolve([], labels) == ([], [])


def test_parse_values_and_grid():
    assert cmp.parse_values("1e-3, 1e-4", 1e-4) == [1e-3, 1e-4]
    assert cmp.parse_values("20, 50, 50", 100) == [20, 50]
    assert cmp.parse_values("none, 3", 3) == [None, 3]
    assert cmp.parse_values("yes, false", False) == [True, False]
    assert cmp.parse_values("sgd,adam", "adam") == ["sgd", "adam"]
    assert cmp.parse_values("1.0", None) == [1.0]
    with pytest.raises(ConfigError, match="'2.5'"):
        cmp.parse_values("2.5", 100)
    with pytest.raises(ConfigError):
        cmp.parse_values("maybe", True)
    grid = cmp.build_grid(RunConfig(), {"train.lr": [1e-3, 1e-4], "model.dropout": [0.1, 0.2, 0.3], "train.seed": []})
    assert len(grid) == 6 and len({c.digest() for c in grid}) == 6
    with pytest.raises(ConfigError):
        cmp.build_grid(RunConfig(), {"model.dropout": [1.5]})


def test_study_rows_and_gap():
    splits = {"validation": {"accuracy": 0.7, "balanced_accuracy": 0.6, "per_class_accuracy": [0.5] * 8},
              "test": {"accuracy": 0.5, "balanced_accuracy": 0.4, "per_class_accuracy": [0.25] * 8}}
    lr = record("x", STUDY_BASE.with_values(**{"train.lr": 1e-3, "train.epochs": 5, "data": "d"}),
                tags=["study"], metrics=splits)
    other = record("y", STUDY_BASE, metrics={})
    frame = cmp.study_frame([lr, other], {"x": "x", "y": "y"}, STUDY_REPORTED, STUDY_ABLATION_CHANGES, STUDY_BASE)
    assert list(frame["study row"]) == ["lr 1e-3"]
    assert frame.loc[0, "study val acc"] == 0.75 and frame.loc[0, "our val acc"] == 0.7
    gaps = cmp.gap_frame([lr, other], {"x": "x", "y": "y"})
    assert list(gaps["run"]) == ["x"] and gaps.loc[0, "gap"] == pytest.approx(0.2)
    assert cmp.gap_per_class_frame(lr)["gap"].tolist() == pytest.approx([0.25] * 8)


def test_confusion_difference_frame_marks_fixes_and_breaks():
    a = np.eye(8) * 10
    a[0, 1] = 5
    b = np.eye(8) * 10
    b[0, 0] = 15  # B fixed the 5 clarinets A called guitar
    b[2, 3] = 2  # and broke 2 singers
    b[2, 2] = 8
    df = cmp.confusion_difference_frame(a, b).set_index(["actual", "predicted"])
    assert df.loc[("clarinet", "guitar"), "verdict"] == "fixed"
    assert df.loc[("clarinet", "clarinet"), "effect"] == 5
    assert df.loc[("singer", "flute"), "verdict"] == "broke"
    assert df.loc[("singer", "singer"), "effect"] == -2
    assert (df["verdict"] == "same").sum() == 64 - 4
    spec = cmp.confusion_difference_chart(df.reset_index(), name_b="new").to_dict()
    rects, text = spec["layer"]
    assert rects["mark"]["type"] == "rect" and rects["encoding"]["color"]["field"] == "effect"
    assert rects["encoding"]["color"]["scale"]["domain"] == [-5.0, 5.0]  # symmetric around 0
    assert rects["encoding"]["color"]["title"] == ["blue: better for new,", "red: worse for new"]
    assert text["encoding"]["text"]["field"] == "label"
    cells = {(r["actual"], r["predicted"]): r["label"] for r in next(iter(spec["datasets"].values()))}
    assert cells[("clarinet", "guitar")] == "-5" and cells[("singer", "flute")] == "+2"
    assert cells[("piano", "piano")] == "" and len(cells) == 64
    assert cmp.confusion_domain([a, b], normalize=False) == (0.0, 15.0)
    assert cmp.confusion_domain([a, b], normalize=True) == (0.0, 1.0)
    runs = [SimpleNamespace(metrics={"test": {"confusion": m.tolist()}}) for m in (a, b)] + [SimpleNamespace(metrics={})]
    assert cmp.mean_confusion(runs, "test")[0, 0] == 12.5 and cmp.mean_confusion(runs[2:], "test") is None


def test_mistakes_frame_lists_the_cell_most_confident_first():
    pred = {"ids": ["u1", "u2", "u3", "u4"], "y": [0, 0, 0, 1],
            "probs": [[0.3, 0.6] + [0.1 / 6] * 6, [0.1, 0.8] + [0.1 / 6] * 6,
                      [0.9, 0.05] + [0.05 / 6] * 6, [0.2, 0.7] + [0.1 / 6] * 6]}
    df = cmp.mistakes_frame(pred, actual=0, predicted=1)
    assert list(df["uuid"]) == ["u2", "u1"]
    assert df.iloc[0]["p(guitar)"] == pytest.approx(0.8)
    assert cmp.mistakes_frame({}, 0, 1).empty
    right = cmp.mistakes_frame(pred, actual=0, predicted=0)  # the diagonal: one p column, no duplicate
    assert list(right.columns) == ["uuid", "p(clarinet)", "top 3"] and list(right["uuid"]) == ["u3"]
    assert right.columns.is_unique and cmp.mistakes_frame({}, 2, 2).columns.is_unique


def test_seed_groups_and_bands():
    hist = lambda v: [{"epoch": 1, "val_loss": v, "seconds": 1.0}, {"epoch": 2, "val_loss": v / 2, "seconds": 2.0}]
    a = record("a", RunConfig(), history=hist(1.0), group="g")
    b = record("b", RunConfig(), history=hist(3.0), group="g")
    c = record("c", RunConfig(), history=hist(2.0), group="h")
    groups = cmp.seed_groups([a, b, c], {"a": "a", "b": "b", "c": "c"})
    assert list(groups) == ["a (2 seeds)", "c"]
    bands = cmp.group_bands(groups, "val_loss")
    first = bands[(bands.group == "a (2 seeds)") & (bands.epoch == 1)].iloc[0]
    assert first["mean"] == 2.0 and first["min"] == 1.0 and first["max"] == 3.0 and first["n"] == 2
    spec = cmp.band_chart(bands, band="minmax", log_scale=True).to_dict()
    area, line = spec["layer"]
    assert area["mark"]["type"] == "area" and (area["encoding"]["y"]["field"], area["encoding"]["y2"]["field"]) == ("min", "max")
    assert line["encoding"]["y"]["field"] == "mean" and line["encoding"]["y"]["scale"]["type"] == "log"
    assert spec["encoding"]["color"]["field"] == "group" if "encoding" in spec else area["encoding"]["color"]["field"] == "group"
    std_spec = cmp.band_chart(bands, band="std").to_dict()
    assert (std_spec["layer"][0]["encoding"]["y"]["field"], std_spec["layer"][0]["encoding"]["y2"]["field"]) == ("lo", "hi")
    smooth = cmp.smooth_bands(bands, 0.5).set_index(["group", "epoch"])
    assert smooth.loc[("a (2 seeds)", 1), "mean"] == 2.0  # bias-corrected EMA starts at the value
    assert 1.0 < smooth.loc[("a (2 seeds)", 2), "mean"] < 2.0


def test_param_metric_views():
    runs = [record(f"r{k}", RunConfig().with_values(**{"train.lr": lr, "train.optimizer": opt}),
                   metrics={"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.1 * k}})
            for k, (lr, opt) in enumerate([(1e-5, "adam"), (1e-3, "sgd"), (1e-4, "adam")])]
    df = cmp.runs_frame(runs)
    numeric = cmp.param_metric_chart(df, "train.lr", "val acc").to_dict()
    encoding = numeric["layer"][0]["encoding"]  # the points
    assert encoding["x"]["field"] == "x" and encoding["x"]["scale"]["type"] == "log"
    assert encoding["y"]["field"] == "val acc"
    rows = next(iter(numeric["datasets"].values()))
    assert sorted(r["x"] for r in rows) == [1e-5, 1e-4, 1e-3]
    category = cmp.param_metric_chart(df, "train.optimizer", "test acc").to_dict()["layer"][0]["encoding"]
    assert category["x"]["field"] == "value" and category["x"]["type"] == "nominal"
    assert category["x"]["sort"] == ["adam", "sgd"]
    long = cmp.parallel_frame(df, ["train.lr", "train.optimizer"], "test acc")
    assert len(long) == 9
    lr_pos = long[long.axis == "train.lr"].set_index("id")["position"]
    assert lr_pos["r0"] == 0 and lr_pos["r1"] == 1 and lr_pos["r2"] == pytest.approx(0.5)  # log scale
    ticks = long.drop_duplicates(["axis", "tick"]).groupby("axis")["tick"].apply(list).to_dict()
    assert ticks["train.lr"] == ["1e-5", "1e-3", "1e-4"]  # formatted, never "1e-05"
    assert ticks["test acc"] == ["0.0%", "", "20.0%"]  # the metric: its ends, as percentages
    assert set(long[long.axis == "train.lr"]["title"]) == {"train.lr (log)"}
    spec = cmp.parallel_coordinates_chart(long, ["train.lr", "train.optimizer", "test acc"]).to_dict()
    lines, tick_text = spec["layer"]
    assert lines["mark"]["type"] == "line" and lines["encoding"]["detail"]["field"] == "id"
    x = spec["encoding"]["x"] if "encoding" in spec else lines["encoding"]["x"]
    assert x["field"] == "title" and x["sort"] == ["train.lr (log)", "train.optimizer", "test acc"]
    assert tick_text["encoding"]["text"]["field"] == "tick"
    assert len(next(iter(spec["datasets"].values()))) == 9
    assert cmp.number_tick(2.5e-4, log=True) == "2.5e-4" and cmp.number_tick(0.5, log=False) == "0.5"


def test_scatter_names_its_points_inside_the_plot():
    runs = [record(f"r{k}", RunConfig().with_values(**{"train.lr": lr}), name=f"lr run {k}",
                   metrics={"validation": {"accuracy": 0.2 + 0.1 * k}, "test": {"accuracy": 0.1}})
            for k, lr in enumerate([1e-5, 1e-4, 1e-3])]
    spec = cmp.param_metric_chart(cmp.runs_frame(runs), "train.lr", "val acc").to_dict()
    points, left, right = spec["layer"]
    assert points["mark"]["type"] == "circle"
    assert {"field": "name", "type": "nominal"} in points["encoding"]["tooltip"]
    for layer, align in ((left, "left"), (right, "right")):  # text toward the middle: inside the plot
        assert layer["mark"]["type"] == "text" and layer["mark"]["align"] == align
        assert layer["encoding"]["text"]["field"] == "label"
    rows = next(iter(spec["datasets"].values()))
    assert [r["right_half"] for r in rows] == [False, False, True]  # 1e-3 is at the right edge: text to its left
    assert [r["label"] for r in rows] == ["lr run 0", "lr run 1", "lr run 2"]
    twins = [record(f"t{k}", RunConfig().with_values(**{"train.lr": 1e-3}), name=f"twin {k}",
                    metrics={"validation": {"accuracy": 0.5}}) for k in range(2)]
    rows = next(iter(cmp.param_metric_chart(cmp.runs_frame(runs + twins), "train.lr", "val acc")
                     .to_dict()["datasets"].values()))
    assert [r["label"] for r in rows] == ["lr run 0", "lr run 1", "lr run 2", "twin 0, twin 1", ""]  # one spot
    many = [record(f"m{k}", RunConfig().with_values(**{"train.seed": k}), metrics={"validation": {"accuracy": 0.5}})
            for k in range(cmp.LABELLED_POINTS + 1)]
    assert len(cmp.param_metric_chart(cmp.runs_frame(many), "train.seed", "val acc").to_dict()["layer"]) == 1


def test_unfinished_and_diverged_runs_do_not_break_the_page(populated):
    store = populated.store
    running = store.create_run(RunConfig(data=populated.data), name="still going")
    store.set_status(running, "running")
    store.append_epoch(running, {"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_accuracy": 0.2, "seconds": 1.0})
    diverged = store.create_run(RunConfig(data=populated.data).with_values(**{"train.lr": 10.0}), name="exploded")
    store.save_result(diverged, SimpleNamespace(
        status="diverged", error="loss became nan", device="cpu", state_dict={}, standardizer=None, best_epoch=None,
        history=[{"epoch": 1, "train_loss": float("nan"), "val_loss": float("inf"), "val_accuracy": 0.1, "seconds": 1.0}],
        step_losses=[], metrics={}, predictions={}))
    at = open_compare({"runs": f"{running},{diverged}"})
    assert "None of the chosen runs has finished evaluation yet." in texts(at)
    at.toggle(key="cmp_log").set_value(True).run()
    at.multiselect(key="runs").set_value([running, diverged, populated.ids["a"]]).run()
    assert not at.exception
    assert at.multiselect(key="runs").value == [running, diverged, populated.ids["a"]]


def test_ablation_table_is_holm_corrected_and_same_configurations_never_win(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']},{ids['b1']}"})
    at.toggle(key="cmp_grouped").set_value(False).run()  # three single runs: alpha, beta s0, beta s1
    assert not at.exception
    table = next(df.value for df in at.dataframe if "Holm-adjusted p" in df.value.columns)
    assert list(table["A"]) == ["alpha", "alpha"] and list(table["B"]) == ["beta s0", "beta s1"]
    words = texts(at)
    assert "Holm-adjusted over the 2 comparisons" in words and "Verdicts use the adjusted p" in words
    runs = [populated.store.get(i) for i in (ids["a"], ids["b0"], ids["b1"])]
    units = {"alpha": runs[:1], "beta s0": runs[1:2], "beta s1": runs[2:]}
    expected = stats.compare_family(units, stats.against_reference(list(units), "alpha"),
                                    lambda r: populated.store.load_predictions(r.id))
    assert list(table["Holm-adjusted p"]) == [verdicts.format_p(r["p_adjusted"]) for r in expected]
    assert list(table["verdict"]) == [sig.row_verdict(r) for r in expected]
    # every pair: beta s0 v beta s1 are one configuration (two seeds): never "better"
    at.radio(key="cmp_family").set_value("every pair").run()
    assert not at.exception
    table = next(df.value for df in at.dataframe if "Holm-adjusted p" in df.value.columns)
    assert len(table) == 3
    row = table[(table["A"] == "beta s0") & (table["B"] == "beta s1")].iloc[0]
    assert row["verdict"] == "same configuration: seed noise"
    assert "Holm-adjusted over the 3 comparisons" in texts(at)
    at.selectbox(key="cmp_a").set_value("beta s0").run()
    at.selectbox(key="cmp_b").set_value("beta s1").run()
    assert "are the same configuration (they differ only in the seed)" in texts(at)
    assert not at.success  # no green verdict for two seeds of one configuration


def test_runs_table_sorts_by_validation_and_warns_about_test(populated):
    at = open_compare()
    assert at.selectbox(key="cmp_sort").value == "val acc"
    order = [populated.store.get(populated.ids[k]) for k in ("a", "b0", "b1")]
    by_val = sorted(order, key=lambda r: -r.metrics["validation"]["accuracy"])
    assert table_names(at)[:3] == [r.name for r in by_val] and table_names(at)[3] == "broken"
    assert verdicts.TEST_SPLIT_NOTE not in texts(at)
    # parameters vs metrics shows the chosen runs only (issue #30): choose two
    at.multiselect(key="runs").set_value([populated.ids["a"], populated.ids["b0"]]).run()
    assert at.selectbox(key="pm_metric").value == "val acc"
    at.selectbox(key="cmp_sort").set_value("test acc").run()
    assert verdicts.TEST_SPLIT_NOTE in texts(at)
    by_test = sorted(order, key=lambda r: -r.metrics["test"]["accuracy"])
    assert table_names(at)[:3] == [r.name for r in by_test]


def test_sort_runs_and_test_metrics():
    df = pd.DataFrame({"val acc": [0.5, None, 0.9], "val-test gap": [0.1, 0.3, -0.2], "name": ["a", "b", "c"],
                       "created": [1, 3, 2]})
    assert list(cmp.sort_runs(df, "val acc")["name"]) == ["c", "a", "b"]
    assert list(cmp.sort_runs(df, "val-test gap")["name"]) == ["c", "a", "b"]
    assert list(cmp.sort_runs(df, "created")["name"]) == ["b", "c", "a"]
    assert [c for c in cmp.SORT_COLUMNS if cmp.is_test_metric(c)] == [
        "test acc", "test balanced acc", "test macro-F1", "val-test gap"]
    assert cmp.SORT_COLUMNS[0] == "val acc"


def test_family_pairs_and_frame():
    names = ["base", "lr", "sgd"]
    assert sig.family_pairs(names, "base", "lr", sig.MODES[0]) == [("base", "lr"), ("base", "sgd")]
    assert sig.family_pairs(names, "sgd", "lr", sig.MODES[1]) == [("base", "lr"), ("base", "sgd"), ("sgd", "lr")]
    row = {"a": "base", "b": "lr", "n_runs_a": 3, "n_runs_b": 3, "accuracy_a": 0.6, "accuracy_b": 0.65,
           "difference": 0.05, "ci": [0.01, 0.09], "p_value": 0.012, "p_adjusted": 0.024, "significant": True,
           "better": "B", "scope": "configurations", "same_configuration": False, "too_few_seeds": False}
    frame = sig.family_frame([row, {"a": "base", "b": "x", "error": "no clips"}])
    assert list(frame.columns) == list(sig.FAMILY_COLUMNS)
    assert list(frame.columns[:3]) == ["B", "difference (B - A)", "Holm-adjusted p"]  # a phone's first screen
    first = frame.iloc[0]
    assert (first["runs"], first["difference (B - A)"], first["95% interval"]) == ("3 v 3", "+5.0 points", "+1.0 to +9.0")
    assert (first["p"], first["Holm-adjusted p"], first["verdict"]) == ("p = 0.012", "p = 0.024", "lr better")
    assert frame.iloc[1]["verdict"] == "cannot test: no clips"
    assert sig.row_verdict(row | {"significant": False, "better": None, "too_few_seeds": True}).startswith(
        "no difference shown (too few seeds")


def test_home_best_runs_are_chosen_on_validation(populated):
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    assert not at.exception
    best = next(df.value for df in at.dataframe if "val balanced acc." in df.value.columns)
    runs = [populated.store.get(populated.ids[k]) for k in ("a", "b0", "b1")]
    by_val = sorted(runs, key=lambda r: -r.metrics["validation"]["accuracy"])  # ui.defaults.HEADLINE_METRIC
    assert list(best["run"]) == [r.name for r in by_val]
    assert list(best.columns[:3]) == ["run", "val acc.", "val balanced acc."]
    assert "by validation accuracy" in texts(at)


def test_study_row_matches_either_librosa_inputs():
    current = STUDY_BASE.with_values(**{"features.inputs": "librosa_0.11", "train.lr": 1e-5})
    assert STUDY_BASE.features.inputs == "librosa_0.7"
    assert cmp.study_row(current, STUDY_ABLATION_CHANGES, STUDY_BASE) == "lr 1e-5"
    assert cmp.study_row(STUDY_BASE.with_values(**{"train.lr": 1e-5}), STUDY_ABLATION_CHANGES, STUDY_BASE) == "lr 1e-5"
def test_flips_and_agreement_sections(populated):
    from engine.compare.stats import mcnemar_exact

    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']}"})
    at.radio(key="flip_split").set_value("test").run()
    assert not at.exception
    pa = populated.store.load_predictions(ids["a"])["test"]
    pb = populated.store.load_predictions(ids["b0"])["test"]
    y = np.asarray(pa["y"])
    table = mcnemar_exact(np.argmax(pa["probs"], 1) == y, np.argmax(pb["probs"], 1) == y)
    assert table.b_only > 0
    assert f"B **fixed {table.b_only}**, **broke {table.a_only}**" in texts(at)
    flip_table = [df.value for df in at.dataframe if "A says" in df.value.columns][0]
    assert len(flip_table) == table.b_only  # "fixed" is shown first
    assert (flip_table["true"] == flip_table["B says"]).all() and (flip_table["true"] != flip_table["A says"]).all()
    assert flip_table["change"].is_monotonic_decreasing
    # filtering by the true class keeps only that class
    cls = flip_table["true"].iloc[0]
    at.selectbox(key="flip_true").set_value(cls).run()
    filtered = [df.value for df in at.dataframe if "A says" in df.value.columns][0]
    assert set(filtered["true"]) == {cls} and len(filtered) == int((flip_table["true"] == cls).sum())
    # each shown flip is playable: the tiny dataset is on disk
    assert len(at.get("audio")) >= 1
    assert "Share of the" in texts(at) and "Cohen's kappa" in texts(at)


def test_flips_with_seed_groups_say_how_many_seeds_agree(populated):
    ids = populated.ids
    at = open_compare({"runs": f"{ids['a']},{ids['b0']},{ids['b1']}"})
    assert at.toggle(key="cmp_grouped").value is True
    assert "Seed groups vote" in texts(at) and "B 2" in texts(at)
    flip_table = [df.value for df in at.dataframe if "A says" in df.value.columns][0]
    assert "B seeds agreeing" in flip_table.columns
    assert flip_table["B seeds agreeing"].between(1, 2).all()


def test_program_view_shows_on_the_compare_and_train_pages(env, make_tiny_dataset):
    """A run evaluated on the program view: its column on Compare, its row on the Train page's
    results; a run without it (a dataset with no held-out programs) says n/a and why."""
    data = str(make_tiny_dataset(per_class=1))
    splits = make_splits(16)
    view = ([f"prog-{k}" for k in range(12)], np.array([1, 3, 4, 5, 6, 7] * 2))
    shift = {"validation_source": splits["validation"]}
    with_view = add_run(env, RunConfig(data=data), "with view", skill=0.6,
                        splits={**splits, **shift, "validation_program": view})
    without = add_run(env, RunConfig(data=data), "without view", skill=0.6, seed=1, splits={**splits, **shift})
    at = open_compare()
    table = at.dataframe[0].value.set_index("name")
    assert 0 <= table.loc["with view", "cross-val program acc"] <= 1
    assert pd.isna(table.loc["without view", "cross-val program acc"])
    assert "cross-val program acc" in at.selectbox(key="cmp_sort").options
    for run_id, shown in ((with_view, True), (without, False)):
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
        at.run()
        at.switch_page("pages/2_Train.py")
        at.query_params["run"] = run_id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        label = "Cross-collection validation (program, 6 of 8 classes)"
        assert any(label in m.value for m in at.markdown) is shown
        assert any("n/a" in c.value and "not available for this dataset" in c.value for c in at.caption) is not shown
