"""The ablation builder's values: comma-separated text typed per parameter, and the grid of
configurations they make (through the engine's one parser, engine.core.config.config_from_values)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.runs.launch import ablation_rows


def parse_values(text: str, example: Any) -> list[Any]:
    """Comma-separated values typed for a parameter whose current value is `example`:
    "1e-3, 1e-4" -> [0.001, 0.0001]. 'None' means None; booleans accept true/false/yes/no/1/0.
    Raises ConfigError naming a value that does not fit."""
    out: list[Any] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        lower = token.lower()
        try:
            if lower in ("none", "null", "whole"):
                value: Any = None
            elif isinstance(example, bool):
                if lower not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                    raise ValueError(token)
                value = lower in ("true", "yes", "1", "on")
            elif isinstance(example, int):
                number = float(token)
                if not number.is_integer():
                    raise ValueError(token)
                value = int(number)
            elif isinstance(example, float):
                value = float(token)
            elif isinstance(example, str):
                value = token
            else:  # example None (e.g. grad_clip, frames=None): a number if it looks like one
                number = float(token)
                value = int(number) if number.is_integer() and "." not in token and "e" not in lower else number
        except ValueError:
            kind = type(example).__name__ if example is not None else "number"
            raise ConfigError(f"{token!r} is not a valid {kind} value") from None
        if value not in out:
            out.append(value)
    return out


def build_grid(base: RunConfig, grid: Mapping[str, Sequence[Any]]) -> list[RunConfig]:
    """Every combination of the values in `grid` ({dotted param: [values]}) applied to `base`
    (engine.runs.launch.ablation_rows, the rows the builder queues). Raises ConfigError, naming the
    key, when a combination is not a valid configuration."""
    if not any(grid.values()):
        return [base]
    return [config for _, config in ablation_rows("grid", base, grid=grid)]
