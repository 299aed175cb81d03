"""Predict page: a short model card beside the answer. What the run was trained on, its stored
validation and test accuracy (split named), how its probabilities are calibrated
(engine.learn.trust.calibration_note) and what it cannot know.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from engine.core import paths
from engine.core.errors import EngineError
from engine.data.dataset import DEMO_MARKER, demo_size
from engine.learn.trust import calibration_note
from ui.common import fmt_pct, plain
from ui.defaults import HEADLINE_METRIC, HEADLINE_NAME

CARD_TITLE = "About this model: what it learned from, how good it is, what it cannot know"
DEMO_WORDS = "synthetic solo clips rendered from General MIDI soundfonts, not real recordings"
MEDLEY_WORDS = "real solo recordings (Medley-solos-DB)"


def _is_demo(data: str) -> bool:
    """True when the dataset setting `data` names the built-in demo (a demo name or a made demo folder)."""
    try:
        if demo_size(data) is not None:
            return True
    except EngineError:
        return False
    return bool(data) and (Path(data) / DEMO_MARKER).is_file()


def trained_on_words(data: str, classes: Sequence[str] = ()) -> str:
    """The dataset a run's setting `data` names, in words: the demo (synthetic), Medley-solos-DB,
    or (a run with its own `classes`, RunConfig.classes) the user's own dataset."""
    if _is_demo(data):
        return f"the built-in demo dataset: {DEMO_WORDS}"
    root = data or paths.resolve_data_root(None)
    if classes:
        return f"your own dataset of {len(classes)} classes" + (f", at {plain(root)}" if root else "")
    return f"Medley-solos-DB, {MEDLEY_WORDS}" + (f", at {plain(root)}" if root else "")


def _split_score(record, split: str) -> str:
    return fmt_pct(((record.metrics or {}).get(split) or {}).get(HEADLINE_METRIC))


def accuracy_words(record) -> str:
    """The run's stored headline metric on both evaluation splits, each split named."""
    return (f"{HEADLINE_NAME.capitalize()}: {_split_score(record, 'validation')} on the validation split "
            f"(used to pick its epoch), {_split_score(record, 'test')} on the test split (clips it never "
            "saw: the fairer guess for new clips like them).")


def limits_words(classes: Sequence[str], demo: bool) -> str:
    """What the run cannot know: instruments outside its classes, recordings unlike its data."""
    unlike = "real instruments in real rooms" if demo else "other rooms, microphones, effects or mixes"
    return (f"It cannot know: any instrument outside its {len(classes)} classes ({', '.join(classes)}) still "
            f"gets one of these labels; recording conditions unlike its training data ({unlike}) make its "
            "answers less reliable, and the out-of-distribution check flags some such clips, not all.")


def ensemble_words(ensemble: dict, record) -> str:
    """Who answers when the seeds are averaged: how many, which, and whose figures the card shows."""
    seeds = ", ".join(str(m["seed"]) for m in ensemble["members"])
    return (f"**Answers**: the mean of {len(ensemble['members'])} seeds of this configuration (seeds {seeds}); "
            f"the figures above are of the chosen run alone (seed {record.config.train.seed}).")


def render_model_card(record, classes: Sequence[str], ensemble: dict | None = None, calibration: str | None = None) -> None:
    """The model card of run `record` (classes: its class names) in a collapsed expander; with
    `ensemble` (a Prediction's ensemble record) and its `calibration` words, says that its seeds answer."""
    data = record.config.data
    with st.expander(CARD_TITLE):
        st.markdown(f"**Trained on** {trained_on_words(data, record.config.classes)}.")
        st.markdown(accuracy_words(record))
        if ensemble:
            st.markdown(ensemble_words(ensemble, record))
        st.markdown(f"**Probabilities**: {calibration if ensemble and calibration else calibration_note(record.metrics)}.")
        st.markdown(limits_words(classes, _is_demo(data)))
