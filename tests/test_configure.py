"""One way to state a configuration (issue 17, part 4): engine.core.config.config_from_values turns
dotted names into a validated RunConfig for every front end, and engine.runs.launch.queue_ablation
queues every named ablation. Every error path names the key; the CLI, the Train page's form and
the ablation builder produce the same RunConfig for the same choices."""

from __future__ import annotations

import json

import pytest

from engine.learn import presets
from engine.cli import build_parser, config_from_args
from engine.core.config import RunConfig, config_from_values, config_keys
from engine.core.errors import ConfigError, EngineError
from engine.runs.launch import ablation_rows, plan_ablation, plan_rows, queue_ablation

VARIED = RunConfig(data="demo:tiny").with_values(**{
    "features.frames": None, "features.chroma": True, "features.inputs": "librosa_0.7", "features.clip_norm": True,
    "model.arch": "sequence", "model.hidden_size": 64, "model.dropout": 0.25, "model.pooling": "stats",
    "train.optimizer": "sgd", "train.lr": 3e-3, "train.momentum": 0.9, "train.grad_clip": 0.5,
    "train.augment": "noise,eq", "train.time_mask": 5, "train.select": "best", "train.precision": "bfloat16",
})


# ---- the parser: every error path names the key --------------------------------------------------


@pytest.mark.parametrize("key,suggested", [
    ("train.lrr", "train.lr"), ("lr", "train.lr"), ("dropout", "model.dropout"), ("modle.dropout", "model.dropout"),
    ("model.hidden", "model.hidden_size"), ("features.chromas", "features.chroma"),
])
def test_an_unknown_key_is_refused_with_the_closest_known_one(key, suggested):
    with pytest.raises(ConfigError, match=f"unknown configuration key '{key}'; did you mean '{suggested}'"):
        config_from_values({key: 1})


def test_an_unknown_key_far_from_any_gets_no_guess():
    with pytest.raises(ConfigError) as err:
        config_from_values({"zzzz.qqqq": 1})
    assert "'zzzz.qqqq'" in str(err.value) and "did you mean" not in str(err.value)


@pytest.mark.parametrize("key,value,expected", [
    ("train.lr", "abc", "train.lr must be a number, not 'abc'"),
    ("train.batch_size", "2.5", "train.batch_size must be a whole number, not '2.5'"),
    ("train.standardize", "maybe", "train.standardize must be true or false, not 'maybe'"),
    ("features.frames", "many", "features.frames must be a whole number or none, not 'many'"),
    ("model.hidden_size", [1, 2], "model.hidden_size must be a whole number"),
    ("train.lr", float("inf"), "train.lr must be a finite number"),
    ("train.epochs", True, "train.epochs must be a whole number"),
    ("train.optimizer", "adamw", "train.optimizer must be one of 'adam', 'sgd', 'adadelta', not 'adamw'"),
    ("model.arch", 3, "model.arch must be one of"),
    ("data", 5, "data must be text"),
])
def test_a_wrong_type_is_refused_naming_the_key(key, value, expected):
    with pytest.raises(ConfigError) as err:
        config_from_values({key: value})
    assert expected in str(err.value)


@pytest.mark.parametrize("key,value,expected", [
    ("model.dropout", 1.5, "model.dropout must be in [0, 1), not 1.5"),
    ("model.num_layers", 0, "model.num_layers must be positive, not 0"),
    ("model.extra_hidden", "0", "model.extra_hidden must be positive, not 0"),
    ("train.epochs", "0", "train.epochs must be at least 1, not 0"),
    ("train.lr", "-1e-3", "train.lr must be positive"),
    ("train.batch_size", 0, "train.batch_size must be at least 1"),
    ("train.momentum", 1.0, "train.momentum must be in [0, 1)"),
    ("train.grad_clip", -1, "train.grad_clip must be positive or null"),
    ("train.augment", "reverb", "train.augment: unknown augmentation 'reverb'"),
    ("train.augment_views", 0, "train.augment_views must be at least 1"),
    ("features.frames", 0, "features.frames must be at least 1"),
    ("features.n_fft", 0, "features.n_fft must be positive"),
    ("features.representation", "mfcc", "features.representation must be one of"),
])
def test_an_out_of_range_value_is_refused_naming_the_key(key, value, expected):
    with pytest.raises(ConfigError) as err:
        config_from_values({key: value})
    assert expected in str(err.value)
    assert isinstance(err.value, EngineError)  # the front ends show EngineErrors as messages, never tracebacks


def test_text_as_a_user_types_it_is_read_by_the_fields_type():
    config = config_from_values({"train.lr": " 1e-3 ", "train.batch_size": "50", "train.standardize": "yes",
                                 "features.frames": "all", "train.grad_clip": "none", "model.dropout": "0.2",
                                 "train.augment": ["noise", "gain"], "features.chroma": "off"})
    assert (config.train.lr, config.train.batch_size, config.train.standardize) == (1e-3, 50, True)
    assert config.features.frames is None and config.train.grad_clip is None and config.model.dropout == 0.2
    assert config.train.augment == "gain,noise" and config.features.chroma is False  # canonical order
    assert isinstance(config.train.batch_size, int)
    assert config_from_values({"features.frames": "whole clip"}).features.frames is None


def test_values_start_from_the_base_given():
    config = config_from_values({"train.lr": 1e-3}, presets.STUDY_BASE)
    assert config.features.inputs == "librosa_0.7" and config.train.lr == 1e-3
    assert config_from_values({}, presets.RECOMMENDED) == presets.RECOMMENDED
    assert config_from_values({}) == RunConfig()


@pytest.mark.parametrize("config", [RunConfig(), presets.STUDY_BASE, presets.RECOMMENDED, VARIED])
def test_flat_values_round_trip_and_agree_with_json(config):
    flat = config.flat()
    assert list(flat) == config_keys()
    assert config_from_values(flat) == config
    assert config_from_values(json.loads(json.dumps(flat))) == config  # as JSON would carry them
    assert RunConfig.from_json(config_from_values(flat).to_json()) == config
    assert config_from_values(RunConfig.from_json(config.to_json()).flat(), presets.STUDY_BASE) == config


# ---- the front ends: the same choices make the same RunConfig -----------------------------------


CHOICES = {  # one set of choices, as each front end states it
    "cli": ["--preset", "recommended", "--data", "demo:tiny", "--lr", "0.003", "--frames", "all", "--chroma",
            "--augment", "eq,gain", "--grad-clip", "0.5", "--no-standardize", "--pooling", "stats",
            "--hidden", "64", "--epochs", "7", "--optimizer", "sgd", "--momentum", "0.9"],
    "form": {"w.train.lr": 0.003, "w.features.frames": "whole clip", "w.features.chroma": True,
             "w.train.augment": ["eq", "gain"], "w.train.grad_clip": 0.5, "w.train.standardize": False,
             "w.model.pooling": "stats", "w.model.hidden_size": 64, "w.train.epochs": 7, "w.train.optimizer": "sgd",
             "w.train.momentum": 0.9},
}


def expected_choice() -> RunConfig:
    return presets.RECOMMENDED.with_values(**{
        "data": "demo:tiny", "train.lr": 0.003, "features.frames": None, "features.chroma": True,
        "train.augment": "gain,eq", "train.grad_clip": 0.5, "train.standardize": False, "model.pooling": "stats",
        "model.hidden_size": 64, "train.epochs": 7, "train.optimizer": "sgd", "train.momentum": 0.9})


def test_cli_flags_and_the_train_form_make_the_same_config():
    from ui.train_form import config_from_form, widget_values

    args = build_parser().parse_args(["train", *CHOICES["cli"]])
    from_cli = config_from_args(args, presets.PRESETS[args.preset])
    form = widget_values(presets.RECOMMENDED) | CHOICES["form"]
    from_form = config_from_form(form, presets.RECOMMENDED, "demo:tiny")
    assert from_cli == from_form == expected_choice()
    # the form's own conventions: gradient clip 0 = off
    assert config_from_form(form | {"w.train.grad_clip": 0.0}, presets.RECOMMENDED, "").train.grad_clip is None
    assert config_from_form(widget_values(VARIED), RunConfig(), VARIED.data) == VARIED  # widgets round trip


def test_cli_refuses_a_bad_flag_value_naming_the_key(capsys):
    from engine import cli

    assert cli.main(["train", "--frames", "lots", "--json"]) == 2
    err = capsys.readouterr().err
    assert "features.frames must be a whole number or none, not 'lots'" in err and "Traceback" not in err
    args = build_parser().parse_args(["train", "--frames", "0"])  # --frames 0 still means the whole clip
    assert config_from_args(args, RunConfig()).features.frames is None


def test_ablation_builder_grid_is_the_engines_grid():
    from ui.compare import build_grid, parse_values

    grid = {"train.lr": parse_values("1e-3, 1e-4", 1e-4), "model.dropout": parse_values("0.1,0.5", 0.1)}
    configs = build_grid(presets.STUDY_BASE, grid)
    assert configs == [config for _, config in ablation_rows("grid", presets.STUDY_BASE, grid=grid)]
    assert [c.flat()["train.lr"] for c in configs] == [1e-3, 1e-3, 1e-4, 1e-4]
    with pytest.raises(ConfigError, match="model.dropout must be in"):
        build_grid(presets.STUDY_BASE, {"model.dropout": [2.0]})


# ---- queueing a named ablation ------------------------------------------------------------------


class FakeQueue:
    """Records what would be queued (a JobManager's submit_many)."""

    def __init__(self) -> None:
        self.jobs: list[tuple] = []

    def submit_many(self, jobs):
        jobs = list(jobs)
        start = len(self.jobs)
        self.jobs.extend(jobs)
        return [f"r{start + k}" for k in range(len(jobs))]


def test_the_study_ablation_from_its_base_with_values_on_every_row():
    queue = FakeQueue()
    ids = queue_ablation(queue, "study", data="demo:tiny", values={"train.epochs": 3}, prefix="study: ")
    assert ids == [f"r{k}" for k in range(len(presets.STUDY_ABLATION_CHANGES))]
    names = [name for _, name, _ in queue.jobs]
    assert names == [f"study: {row}" for row in presets.STUDY_ABLATION_CHANGES]
    configs = [config for config, _, _ in queue.jobs]
    assert all(c.train.epochs == 3 and c.data == "demo:tiny" and c.features.inputs == "librosa_0.7" for c in configs)
    assert configs == [c.with_values(**{"data": "demo:tiny"}) for _, c in presets.study_ablation(
        presets.STUDY_BASE, **{"train.epochs": 3})]
    assert all(tags == ("ablation", "study") for _, _, tags in queue.jobs)


def test_the_robustness_ablation_is_seeded_and_named_per_row_and_seed():
    plan = plan_ablation("robustness", data="x", prefix="robustness: ")
    rows = plan_rows(plan)
    assert rows[0] == "recommended" and len(rows) == 1 + len(presets.ROBUSTNESS_OPTIONS)
    assert len(plan) == len(rows) * len(presets.ROBUSTNESS_SEEDS)
    assert plan[1].name == "robustness: recommended seed 1" and plan[1].config.train.seed == 1
    assert {presets.ablation_row(run.name) for run in plan} == set(rows)
    assert plan[0].config.with_values(**{"data": ""}) == presets.RECOMMENDED


def test_user_built_grid_and_seed_repeats():
    grid = plan_ablation("grid", presets.STUDY_BASE, grid={"train.lr": [1e-3, 1e-4]}, label="study base")
    assert [run.name for run in grid] == ["lr 1e-3 of study base", "lr 1e-4 of study base"]
    assert all(run.tags == () and run.seed is None for run in grid)
    seeds = plan_ablation("seeds", presets.STUDY_BASE, seeds=[3, 4], label="base")
    assert [(run.name, run.config.train.seed) for run in seeds] == [("seed 3 of base", 3), ("seed 4 of base", 4)]
    assert len({run.config.with_values(**{"train.seed": 0}) for run in seeds}) == 1


@pytest.mark.parametrize("name,options,message", [
    ("nope", {}, "unknown ablation 'nope'"),
    ("grid", {"grid": {}}, "needs at least one parameter"),
    ("grid", {"grid": {"train.lrr": [1]}}, "did you mean 'train.lr'"),
    ("seeds", {"seeds": []}, "at least one seed"),
    ("study", {"values": {"model.dropout": 3}}, "model.dropout must be in"),
    ("study", {"seeds": [-1, 0]}, "non-negative"),
])
def test_a_bad_ablation_queues_nothing(name, options, message):
    queue = FakeQueue()
    with pytest.raises(ConfigError, match=message):
        queue_ablation(queue, name, presets.STUDY_BASE if name in ("grid", "seeds") else None, **options)
    assert queue.jobs == []


def test_cli_ablate_plans_what_the_home_page_queues():
    """`ablate --preset study --epochs 3` and the home page's button make the same configurations
    (the CLI's rows are unprefixed, the page's are prefixed "study: ")."""
    from engine.cli import ablation_base

    args = build_parser().parse_args(["ablate", "--preset", "study", "--data", "demo:tiny", "--epochs", "3"])
    cli_plan = plan_ablation("study", ablation_base(args))
    page_plan = plan_ablation("study", data="demo:tiny", values={"train.epochs": 3}, prefix="study: ")
    assert [run.config for run in cli_plan] == [run.config for run in page_plan]
    assert [f"study: {run.name}" for run in cli_plan] == [run.name for run in page_plan]
