"""What the Compare page's sections read more than once per rerun, cached per server: a run's
stored predictions, the significance family and bootstrap intervals (engine.compare.stats)."""

from __future__ import annotations

import streamlit as st

from engine.compare import stats
from engine.core.errors import EngineError
from ui.common import get_store


@st.cache_data(max_entries=32, show_spinner=False)
def predictions(run_id: str, finished: float | None) -> dict:
    """A run's stored predictions ({} when it has none); `finished` invalidates the cache."""
    try:
        return get_store().load_predictions(run_id)
    except EngineError:
        return {}


def run_predictions(run) -> dict:
    """predictions() of a run record."""
    return predictions(run.id, run.finished)


@st.cache_data(max_entries=32, show_spinner="Testing the difference…")
def family(units: tuple, pairs: tuple, split: str) -> list[dict]:
    """engine.compare.stats.compare_family over units ((label, ((run id, finished), ...)), ...): the same
    function `python -m engine compare` calls, Holm-corrected over `pairs`."""
    records = {label: [get_store().get(run_id) for run_id, _ in members] for label, members in units}
    stamps = {run_id: finished for _, members in units for run_id, finished in members}
    return stats.compare_family(records, list(pairs), lambda r: predictions(r.id, stamps[r.id]), split=split)


@st.cache_data(max_entries=32, show_spinner=False)
def accuracy_intervals(run_id: str, finished: float | None, split: str) -> dict:
    """Bootstrap intervals of one run's accuracy and balanced accuracy on `split`."""
    pred = predictions(run_id, finished)[split]
    width = len(pred["probs"][0]) if len(pred["probs"]) else None  # the run's classes (8 for Medley-solos-DB)
    return stats.bootstrap_accuracy(pred["y"], pred["probs"], **({"num_classes": width} if width else {}))
