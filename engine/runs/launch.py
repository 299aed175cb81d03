"""Queue an ablation: one function for every front end (the home page's buttons, the Compare
page's ablation builder, `python -m engine ablate`).

An ablation is a list of rows (row name, configuration), each trained once per seed:
- a preset ablation of `presets.ABLATIONS` ("study", "beyond", "robustness"), from its base
  (`presets.ABLATION_BASES`; read when called) or a given one;
- "grid": a user-built one, every combination of values of some parameters of a base
  ({"train.lr": [1e-3, 1e-4], "model.dropout": [0.1, 0.5]}), rows named by what they change;
- "seeds": the base alone, repeated over seeds (a seed group).

`plan_ablation` says which runs an ablation makes (nothing queued); `queue_ablation` queues
them on a JobManager (all at once, so those that can train together start as one group) and
returns their run ids in plan order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..learn import presets
from ..core.config import RunConfig, config_from_values
from ..core.errors import ConfigError
from .naming import describe

USER_ABLATIONS: tuple[str, ...] = ("grid", "seeds")


@dataclass(frozen=True)
class PlannedRun:
    """One run of an ablation: its row, its seed (None when the ablation has one run per row),
    configuration, run name and tags."""

    row: str
    seed: int | None
    config: RunConfig
    name: str
    tags: tuple[str, ...]


class Queue(Protocol):
    """What queue_ablation needs of a JobManager."""

    def submit_many(self, jobs: Any) -> list[str]: ...


def ablation_names() -> list[str]:
    """Every ablation queue_ablation knows: the presets' and the user-built kinds."""
    return [*presets.ABLATIONS, *USER_ABLATIONS]


def ablation_base(name: str, data: str | None = None) -> RunConfig:
    """The configuration a preset ablation starts from (the study's base with its 2019 inputs,
    or the recommended one for robustness), with `data` set when given. ConfigError for an
    unknown name."""
    if name not in presets.ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}; choose one of {sorted(presets.ABLATIONS)}")
    # robustness: presets.RECOMMENDED as it is now (ABLATION_BASES holds it as imported)
    base = presets.RECOMMENDED if name == "robustness" else presets.ABLATION_BASES[name]
    return base if data is None else base.with_values(data=data)


def default_seeds(name: str, base: RunConfig) -> tuple[int, ...]:
    """An ablation's seeds: the preset's seed offsets (robustness: 3) from the base's seed."""
    offsets = presets.ROBUSTNESS_SEEDS if name == "robustness" else presets.ABLATION_SEEDS.get(name, (0,))
    return tuple(base.train.seed + int(s) for s in offsets)


def ablation_rows(name: str, base: RunConfig, *, values: Mapping[str, Any] | None = None,
                  grid: Mapping[str, Sequence[Any]] | None = None) -> list[tuple[str, RunConfig]]:
    """(row name, configuration) of an ablation from `base`; `values` (dotted) are set on every
    row. "grid": one row per combination of the `grid` values ("lr 1e-3, dropout 0.5"),
    every one checked; "seeds": the base alone."""
    values = dict(values or {})
    if name == "grid":
        if not grid or not any(grid.values()):
            raise ConfigError("a grid ablation needs at least one parameter with values")
        base = config_from_values(values, base)
        keys = [k for k, v in grid.items() if v]
        rows = []
        for combo in itertools.product(*(list(grid[k]) for k in keys)):
            config = config_from_values(dict(zip(keys, combo)), base)
            flat = config.flat()
            rows.append((", ".join(describe(k, flat[k]) for k in keys), config))
        return rows
    if name == "seeds":
        return [("", config_from_values(values, base))]
    if name not in presets.ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}; choose one of {ablation_names()}")
    config_from_values(values, base)  # check the names and values once, with clear errors
    return presets.ABLATIONS[name](base, **values) if values else presets.ABLATIONS[name](base)


def plan_ablation(name: str, base: RunConfig | None = None, *, data: str | None = None,
                  values: Mapping[str, Any] | None = None, grid: Mapping[str, Sequence[Any]] | None = None,
                  seeds: Sequence[int] | None = None, label: str | None = None, prefix: str = "",
                  tags: Sequence[str] | None = None) -> list[PlannedRun]:
    """The runs of ablation `name` (see the module docstring), rows outer, seeds inner.

    base: default the preset's (`ablation_base`); data: set on the base. values: dotted values
    set on every row. grid: the "grid" ablation's values. seeds: default `default_seeds` ("seeds":
    required). Names: preset rows "<prefix><row>" plus " seed N" when the ablation has several
    seeds ("robustness: + per-clip CMVN seed 1"); grid rows "<row> of <label>"; seed repeats
    "seed N of <label>". tags: default ("ablation", name) for presets, none for user-built."""
    if base is None:
        base = ablation_base(name, data)
    elif data is not None:
        base = base.with_values(data=data)
    rows = ablation_rows(name, base, values=values, grid=grid)
    if name == "seeds" and not seeds:
        raise ConfigError("repeating over seeds needs at least one seed")
    if seeds is not None and any(int(s) < 0 for s in seeds):
        raise ConfigError(f"seeds must be non-negative, not {list(seeds)}")
    user = name in USER_ABLATIONS
    tags = tuple(tags) if tags is not None else (() if user else ("ablation", name))
    if name == "grid":
        return [PlannedRun(row, None, config, f"{row} of {label}" if label else row, tags) for row, config in rows]
    run_seeds = tuple(int(s) for s in seeds) if seeds else default_seeds(name, base)
    seeded = name == "seeds" or len(run_seeds) > 1 or len(default_seeds(name, base)) > 1
    planned = []
    for row, config in rows:
        for seed in run_seeds if seeded else (None,):
            if seed is not None:
                config_s = config.with_values(**{"train.seed": seed})
                run_name = f"seed {seed} of {label or 'run'}" if name == "seeds" else f"{prefix}{row} seed {seed}"
            else:
                config_s, run_name = config, f"{prefix}{row}"
            planned.append(PlannedRun(row, seed, config_s, run_name, tags))
    return planned


def queue_ablation(manager: Queue, ablation: str | Sequence[PlannedRun], base: RunConfig | None = None,
                   **options: Any) -> list[str]:
    """Queue an ablation on `manager` and return the run ids in plan order. `ablation`: a name
    (with plan_ablation's options) or a plan made by plan_ablation. Every configuration is
    checked before any run is queued (ConfigError names the key)."""
    plan = plan_ablation(ablation, base, **options) if isinstance(ablation, str) else list(ablation)
    return manager.submit_many([(run.config, run.name, run.tags) for run in plan])


def plan_rows(plan: Sequence[PlannedRun]) -> list[str]:
    """The row names of a plan, in order, each once."""
    return list(dict.fromkeys(run.row for run in plan))
