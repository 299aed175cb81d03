"""Run names from what differs from the base (engine.runs.naming)."""

from __future__ import annotations

from engine.core.config import RunConfig
from engine.runs.naming import difference_name, run_name, short_value
from engine.learn.presets import RECOMMENDED, STUDY_BASE


def test_short_values() -> None:
    assert [short_value(v) for v in (1e-3, 1e-4, 2.5e-5, 0.05, 0.5, 100, True, False, None, 1e-7)] == [
        "1e-3", "1e-4", "2.5e-5", "0.05", "0.5", "100", "on", "off", "none", "1e-7"]


def test_difference_names() -> None:
    base = STUDY_BASE
    assert difference_name(base, base) == ""
    assert difference_name(base.with_values(**{"train.lr": 1e-3}), base) == "lr 1e-3"
    assert difference_name(base.with_values(**{"train.optimizer": "sgd", "model.dropout": 0.5}), base) in (
        "dropout 0.5, SGD", "SGD, dropout 0.5")
    assert difference_name(base.with_values(**{"features.frames": None, "train.standardize": True}), base) == \
        "whole clip, + standardize"
    assert difference_name(base.with_values(data="/somewhere"), base) == ""  # where data lives is not a difference


def test_run_names_say_seed_of_what() -> None:
    base = STUDY_BASE
    lr = base.with_values(**{"train.lr": 1e-3})
    assert run_name(lr, base, "study") == "lr 1e-3"
    assert run_name(lr.with_values(**{"train.seed": 2}), base, "study") == "seed 2 of lr 1e-3"
    assert run_name(base, base, "study base") == "study base"
    assert run_name(base.with_values(**{"train.seed": 3}), base, "study base") == "seed 3 of study base"
    assert run_name(RECOMMENDED, RECOMMENDED, "recommended") == "recommended"
    assert isinstance(run_name(RunConfig(), RECOMMENDED, "recommended"), str)


def test_unnamed_runs_are_named_by_their_difference_from_the_preset() -> None:
    from engine.runs.naming import preset_run_name

    lr = STUDY_BASE.with_values(**{"train.lr": 1e-3, "data": "demo:tiny"})  # another dataset is no difference
    assert preset_run_name(lr, STUDY_BASE, "study") == "lr 1e-3"
    assert preset_run_name(STUDY_BASE.with_values(data="elsewhere"), STUDY_BASE, "study") == "study base"
    assert preset_run_name(RECOMMENDED.with_values(**{"train.seed": 4}), RECOMMENDED, "recommended") == \
        "seed 4 of recommended"
