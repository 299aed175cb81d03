"""The Compare page's "Listen to the mistakes": the clips behind one confusion cell of a run,
most confident first, playable when the run's dataset is here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from engine.core.errors import EngineError
from engine.core.labels import short_names_of
from ui import compare as cmp
from ui.common import dataset_ready, load_dataset_cached, percent_style
from ui.compare_cache import run_predictions


def render(finished: Sequence[Any], by_id: Mapping[str, Any], labels: Mapping[str, str],
           split: str = "validation") -> None:
    """Pick a run, split (opens on `split`, the page's) and cell (opens on the run's largest
    mistake); list and play its clips, each player labelled with its true and predicted class."""
    st.subheader("Listen to the mistakes")
    m1, m2, m3, m4 = st.columns(4)
    who = m1.selectbox("Run", [r.id for r in finished], format_func=labels.get, key="mis_run")
    splits = ["validation", "test"]
    m_split = m2.selectbox("Split", splits, index=splits.index(split) if split in splits else 0, key="mis_split")
    cell = (who, m_split)
    # a new run or split, or a new visit of the page (the cell boxes' keys are gone after a page
    # switch), opens on the largest mistake
    if st.session_state.get("_mis_cell") != cell or "mis_actual" not in st.session_state:
        st.session_state["_mis_cell"] = cell
        largest = cmp.largest_mistake(cmp.confusion_matrix_of(by_id[who], m_split))
        st.session_state["mis_actual"], st.session_state["mis_pred"] = largest or (0, 1)
    run = by_id[who]
    names = short_names_of(run)
    for key in ("mis_actual", "mis_pred"):  # a run of fewer classes than the one chosen before
        if st.session_state.get(key, 0) >= len(names):
            st.session_state[key] = 0
    actual = m3.selectbox("Actual", range(len(names)), format_func=names.__getitem__, key="mis_actual")
    predicted = m4.selectbox("Predicted as", range(len(names)), format_func=names.__getitem__, key="mis_pred")
    clips = cmp.mistakes_frame(run_predictions(run).get(m_split) or {}, actual, predicted, class_names=names)
    st.caption(f"{len(clips)} {names[actual]} clips of the {m_split} split predicted as "
               f"{names[predicted]}, most confident first.")
    st.dataframe(percent_style(clips, [c for c in clips.columns if c.startswith("p(")]), hide_index=True,
                 width="stretch")
    if len(clips):
        _play(run, list(clips["uuid"].head(10)), names[actual], names[predicted])


def player_caption(actual: str, predicted: str, uuid: str) -> str:
    """What a player plays: 'true: flute · predicted: violin · clip 1a2b...'."""
    return f"true: **{actual}** · predicted: **{predicted}** · clip {uuid}"


def _play(run: Any, uuids: list[str], actual: str, predicted: str) -> None:
    if not dataset_ready(run.config.data):
        st.caption("The run's dataset is not available here, so the clips cannot be played.")
        return
    try:
        ds = load_dataset_cached(run.config.data)
    except EngineError as exc:
        st.caption(f"Cannot read the run's dataset: {exc}")
        return
    from engine.data.dataset import find_clip

    for uuid in uuids:
        try:
            st.caption(player_caption(actual, predicted, uuid))
            clip = find_clip(ds, uuid)
            window = {} if clip.seconds is None else {"start_time": int(clip.start),  # a window of a long file
                                                      "end_time": int(clip.start + clip.seconds) + 1}
            st.audio(str(clip.path), **window)
        except EngineError as exc:
            st.caption(f"{uuid}: {exc}")
