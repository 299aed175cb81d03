"""A hyperparameter search space: dotted configuration names with ranges or choices.

A `SearchSpace` is a frozen part of the configuration, like a RunConfig: it round-trips to
JSON, and every name and value in it is checked against RunConfig's fields when it is made
(`parse_space`), so a search never starts on a space it cannot train. Written as a JSON
object (or a TOML table) of dotted name -> spec:

    {"train.lr": {"low": 1e-4, "high": 1e-2, "log": true},   # a range (float field: log-uniform if "log")
     "model.num_layers": {"low": 1, "high": 3},             # a range of a whole-number field: ints
     "train.optimizer": ["adam", "sgd"],                    # a list: choices
     "features.deltas": [false, true]}

A range's kind follows the field's type: an int field draws ints, a float field floats.
Text, true/false and "one of" fields take choices only. `train.seed` and `data` are the
search's own (its seeds, its dataset) and cannot be searched. Imports only core.
"""

from __future__ import annotations

import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, _field_hint, config_from_values, config_keys
from .errors import ConfigError, EngineError

NOT_SEARCHABLE = ("data", "train.seed")  # the search's dataset and its seeds (confirm needs fresh ones)
_RANGE_KEYS = {"low", "high", "log"}


class SearchError(EngineError):
    """A search space, a search or its confirmation cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Param:
    """One searched name: a range (low, high, log; kind "int" or "float") or `choices` (kind "choice")."""

    name: str
    kind: str  # "float" | "int" | "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def spec(self) -> Any:
        """The JSON form: a list of choices or {"low", "high", "log"}."""
        if self.kind == "choice":
            return list(self.choices)
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        return out

    def describe(self) -> str:
        """'train.lr: 0.0001 .. 0.01 (log)' or 'train.optimizer: adam | sgd'."""
        if self.kind == "choice":
            return f"{self.name}: " + " | ".join(json.dumps(c) for c in self.choices)
        return f"{self.name}: {self.low:g} .. {self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class SearchSpace:
    """Searched names, in the order given. `params` is never empty."""

    params: tuple[Param, ...]

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.spec() for p in self.params}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Dotted values drawn by an Optuna trial (suggest_float / suggest_int / suggest_categorical)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "choice":
                values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
            elif p.kind == "int":
                values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                values[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
        return values

    def grid(self) -> dict[str, list[Any]]:
        """Every value of every name, for a full grid: choices as they are, an int range every
        whole number in it; SearchError for a float range (a grid needs a finite list)."""
        out: dict[str, list[Any]] = {}
        for p in self.params:
            if p.kind == "choice":
                out[p.name] = list(p.choices)
            elif p.kind == "int" and not p.log:
                out[p.name] = list(range(int(p.low), int(p.high) + 1))
            else:
                raise SearchError(f"a full grid needs choices; {p.describe()} is a continuous range: "
                                  f"write it as a list of values")
        return out


DEFAULT_SPACE: dict[str, Any] = {  # around the recommended preset (engine.learn.presets.RECOMMENDED)
    "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "train.optimizer": ["adam", "sgd"],
    "train.batch_size": [32, 64, 100, 128],
    "model.hidden_size": {"low": 32, "high": 256, "log": True},
    "model.num_layers": {"low": 1, "high": 3},
    "model.dropout": {"low": 0.0, "high": 0.5},
    "features.deltas": [False, True],
}


def _kinds(name: str) -> list[Any]:
    hint = _field_hint(name)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return [a for a in allowed if a is not type(None)]


def _param(name: str, spec: Any, base: RunConfig) -> Param:
    """One name's spec, checked: the name is a field, a range is ordered and in the field's
    limits, every choice is a value the field takes (on `base`)."""
    if not isinstance(name, str) or name not in config_keys():
        raise SearchError(f"{name!r} is not a configuration field; searchable names are dotted, e.g. "
                          f"'train.lr', 'model.hidden_size' (`python -m engine train --help` lists them)")
    if name in NOT_SEARCHABLE:
        raise SearchError(f"{name} cannot be searched: it belongs to the search itself (its dataset, its seeds)")
    kinds = _kinds(name)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise SearchError(f"{name}: an empty list of choices")
        if len(set(map(json.dumps, spec))) != len(spec):
            raise SearchError(f"{name}: a choice is repeated in {list(spec)}")
        param = Param(name, "choice", choices=tuple(spec))
        values = list(spec)
    elif isinstance(spec, dict):
        if set(spec) - _RANGE_KEYS or not {"low", "high"} <= set(spec):
            raise SearchError(f"{name}: a range is {{\"low\": .., \"high\": .., \"log\": true|false}}, not {spec!r}")
        kind = kinds[0] if kinds else None
        if kind not in (int, float):
            raise SearchError(f"{name} is not a number: give it a list of choices, not a range")
        low, high, log = spec["low"], spec["high"], spec.get("log", False)
        for label, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SearchError(f"{name}: {label} must be a finite number, not {value!r}")
            if kind is int and float(value) != int(value):
                raise SearchError(f"{name}: {label} must be a whole number, not {value!r}")
        if not isinstance(log, bool):
            raise SearchError(f"{name}: log must be true or false, not {log!r}")
        if not low < high:
            raise SearchError(f"{name}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise SearchError(f"{name}: a log range needs low > 0, not {low}")
        param = Param(name, "int" if kind is int else "float", low=float(low) if kind is float else int(low),
                      high=float(high) if kind is float else int(high), log=log)
        values = [param.low, param.high]
    else:
        raise SearchError(f"{name}: give a list of choices or {{\"low\": .., \"high\": ..}}, not {spec!r}")
    for value in values:
        try:
            config_from_values({name: value}, base)
        except ConfigError as exc:
            raise SearchError(f"{name}: {value!r} is not a value this field takes ({exc})") from None
    return param


def parse_space(raw: Any, base: RunConfig | None = None) -> SearchSpace:
    """A checked SearchSpace from its JSON form (dict of dotted name -> spec). SearchError names
    the problem: not an object, empty, an unknown or unsearchable name, a bad range or choice."""
    if not isinstance(raw, dict):
        raise SearchError(f"a search space is an object of dotted names, e.g. {json.dumps({'train.lr': DEFAULT_SPACE['train.lr']})}; "
                          f"got {type(raw).__name__}")
    raw = _flatten(raw)
    if not raw:
        raise SearchError("the search space is empty: give at least one name to search")
    base = base or RunConfig()
    return SearchSpace(tuple(_param(name, spec, base) for name, spec in raw.items()))


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"lr": spec}} (TOML's `[train]` table or `train.lr = ...`) -> {"train.lr": spec}."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("features", "model", "train") and isinstance(value, dict):
            out.update({f"{key}.{name}": spec for name, spec in value.items()})
        else:
            out[key] = value
    return out


def default_space(base: RunConfig | None = None) -> SearchSpace:
    return parse_space(DEFAULT_SPACE, base)


def read_space(text: str, fmt: str = "json", base: RunConfig | None = None) -> SearchSpace:
    """A space from JSON or TOML text; SearchError for text that does not parse."""
    try:
        raw = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SearchError(f"the search space is not valid {fmt.upper()}: {exc}") from None
    return parse_space(raw, base)


def load_space(path: str | Path, base: RunConfig | None = None) -> SearchSpace:
    """A space from a .json or .toml file (by its suffix; anything else is read as JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SearchError(f"cannot read the search space file {path}: {exc.strerror or exc}") from None
    return read_space(text, "toml" if path.suffix.lower() == ".toml" else "json", base)
