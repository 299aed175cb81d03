"""The Compare page's ablation builder: queue runs that vary parameters of a base configuration
(a grid), repeat the base over seeds, or queue the study's ablation from it. Every button calls
engine.runs.launch.queue_ablation, as the home page and `python -m engine ablate` do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from engine.learn import presets
from engine.core.errors import EngineError
from engine.runs.launch import queue_ablation
from ui import compare as cmp
from ui import common
from ui.common import data_setting

STUDY_BASE = "(study base)"


def render(chosen: Sequence[str], by_id: Mapping[str, Any], labels: Mapping[str, str]) -> None:
    """The builder, in an expander."""
    with st.expander("Ablation builder: queue runs that vary parameters of a base configuration"):
        base_options = [STUDY_BASE, *chosen, *[i for i in by_id if i not in chosen]]
        base_pick = st.selectbox("Base configuration", base_options, key="abl_base",
                                 format_func=lambda i: i if i == STUDY_BASE else f"from run {labels[i]}")
        from_run = base_pick != STUDY_BASE
        base = by_id[base_pick].config if from_run else presets.STUDY_BASE.with_values(data=data_setting())
        base_name = labels[base_pick] if from_run else "study base"
        grid = _grid(base)
        n_grid = len(cmp.build_grid(base, grid)) if grid is not None and grid else 0
        b1, b2, b3 = st.columns(3)
        if b1.button(f"Queue {n_grid} runs", disabled=n_grid == 0, type="primary", key="abl_queue"):
            ids = queue_ablation(common.get_manager(), "grid", base, grid=grid, label=base_name)
            st.success(f"Queued {len(ids)} runs. Progress is in the sidebar.")
        n_seeds = int(b2.number_input("Seeds", 2, 20, 3, key="abl_seeds"))
        # A stored run already has its seed: add N new ones after it. The study base: seeds 0..N-1.
        first = base.train.seed + 1 if from_run else 0
        seeds = list(range(first, first + n_seeds))
        if b2.button(f"Repeat over {n_seeds} seeds", key="abl_repeat",
                     help=f"Queue the base configuration with seeds {seeds[0]}..{seeds[-1]}: the runs share a seed "
                          "group with the base, so they can be shown as mean ± std."):
            ids = queue_ablation(common.get_manager(), "seeds", base, seeds=seeds, label=base_name)
            st.success(f"Queued {len(ids)} runs (seeds {seeds[0]}..{seeds[-1]}).")
        epochs = b3.number_input("Epochs per run (study: 50)", 1, 500, base.train.epochs, key="abl_epochs")
        if b3.button("Study ablation preset (10 runs)", key="abl_study",
                     help="The study's base and its nine variations, from this base, tagged 'study'."):
            ids = queue_ablation(common.get_manager(), "study", base, values={"train.epochs": int(epochs)}, prefix="study: ")
            st.success(f"Queued {len(ids)} runs tagged 'study'.")


def _grid(base) -> dict[str, list] | None:
    """The values typed per parameter to vary ({dotted name: [values]}); None (after showing
    the errors) when a value does not make a valid configuration."""
    flat = base.flat()
    vary = st.multiselect("Parameters to vary", cmp.param_names(), key="abl_params")
    grid, problems = {}, []
    for param in vary:
        text = st.text_input(f"Values for `{param}` (comma-separated; base: {cmp.value_label(flat[param])})",
                             key=f"abl_{param}")
        try:
            values = cmp.parse_values(text, flat[param])
            cmp.build_grid(base, {param: values})  # each value must make a valid configuration
        except EngineError as exc:
            problems.append(f"{param}: {exc}")
        else:
            if values:
                grid[param] = values
    for problem in problems:
        st.error(problem)
    return None if problems else grid
