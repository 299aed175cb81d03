"""Run names that say what a run is: what differs from its base ("lr 1e-3, dropout 0.5"),
and which seed of what ("seed 2 of lr 1e-3"), instead of an id."""

from __future__ import annotations

from typing import Any

from ..core.config import RunConfig

# Dotted parameter -> the short word a name uses (others: the last part of the dotted name).
SHORT_PARAMS: dict[str, str] = {
    "train.lr": "lr",
    "train.batch_size": "batch",
    "train.epochs": "epochs",
    "train.seed": "seed",
    "train.optimizer": "optimizer",
    "train.weight_decay": "weight decay",
    "train.grad_clip": "clip",
    "train.class_weighting": "class weights",
    "model.hidden_size": "hidden",
    "model.num_layers": "layers",
    "model.extra_hidden": "extra LSTM",
    "features.frames": "frames",
}
SKIPPED = ("data",)  # where the data lives is not what a run is about


def short_value(value: Any) -> str:
    """A parameter value as a name shows it: 0.001 -> '1e-3', 2.5e-05 -> '2.5e-5', 0.05 ->
    '0.05', 100 -> '100', True -> 'on', False -> 'off', None -> 'none'."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            mantissa, exponent = f"{value:.2e}".split("e")
            mantissa = mantissa.rstrip("0").rstrip(".")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def short_param(dotted: str) -> str:
    """'train.lr' -> 'lr'; 'model.dropout' -> 'dropout'."""
    return SHORT_PARAMS.get(dotted, dotted.split(".")[-1].replace("_", " "))


def describe(param: str, value: Any) -> str:
    """One difference in words: ('train.lr', 1e-3) -> 'lr 1e-3'; frames None -> 'whole clip';
    optimizer 'sgd' -> 'SGD'; a switch -> '+ standardize' / '- standardize'."""
    if param == "features.frames" and value is None:
        return "whole clip"
    if param == "train.optimizer":
        return {"sgd": "SGD", "adam": "Adam", "adadelta": "Adadelta"}.get(str(value), str(value))
    if isinstance(value, bool):
        return f"{'+' if value else '-'} {short_param(param)}"
    return f"{short_param(param)} {short_value(value)}"


def difference_name(config: RunConfig, base: RunConfig, *, skip: tuple[str, ...] = ()) -> str:
    """The parameters of `config` that differ from `base`, in words ('lr 1e-3, dropout 0.5');
    '' when none differ. `skip`: dotted names left out (besides `data`)."""
    mine, theirs = config.flat(), base.flat()
    parts = [describe(key, value) for key, value in mine.items()
             if key not in SKIPPED and key not in skip and theirs.get(key) != value]
    return ", ".join(parts)


def run_name(config: RunConfig, base: RunConfig, base_name: str) -> str:
    """A new run's name from its base: 'lr 1e-3' (the base name when nothing differs, and the
    seed said as 'seed 2 of ...' when the seed is one of the differences)."""
    rest = difference_name(config, base, skip=("train.seed",))
    name = rest or base_name
    if config.train.seed != base.train.seed:
        name = f"seed {config.train.seed} of {name}"
    return name


def preset_run_name(config: RunConfig, preset: RunConfig, preset_name: str) -> str:
    """An unnamed run's name, as the Train page and `python -m engine train` give it: what
    differs from its preset ('lr 1e-3', 'seed 2 of lr 1e-3'), else the preset's name ('study
    base' for the study's). The dataset never counts as a difference."""
    return run_name(config, preset.with_values(data=config.data), "study base" if preset_name == "study" else preset_name)
