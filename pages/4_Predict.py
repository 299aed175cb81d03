"""Predict: classify your own audio (uploads, a recording, a dataset clip, or one of a few example
test clips in one click) with a finished run.

Uploads stay in memory; results are cached per (run, file hash). Long recordings are cut into
3-second windows and the answer is the mean of the windows' probabilities.
"""

from __future__ import annotations

import streamlit as st

from engine.data.audio import SUPPORTED_FORMATS
from engine.core.errors import EngineError
from ui import multi_predict as mp
from ui import predict_view as pv
from ui.common import data_setting, get_store, plain, render_sidebar, run_label, runs_in_url

st.set_page_config(page_title="Predict · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Predict")
st.write("Classify audio with a trained model: upload files, record in the browser, or pick a dataset "
         "clip. Clips longer than 3 seconds are classified window by window.")

# ---- the model --------------------------------------------------------------------------
store = get_store()
runs = pv.finished_runs(store)
if not runs:
    st.info("No finished run yet, so there is no model to predict with. Train one on the **Train** page "
            "(a few epochs on the demo data take a minute or two), or queue the study's ablation from the "
            "home page; finished runs appear here.")
    st.stop()

by_id = {r.id: r for r in runs}
if st.session_state.get("run") not in by_id:  # a link or a reload (?run=...), else the newest finished run
    found = runs_in_url("run", {r.id: run_label(r) for r in runs})
    if found is not None and not found[0]:
        st.warning(f"Run {plain(found[1][0])} from the link is not a finished run in this store; "
                   "showing the newest one.")
    shown = found[0][0] if found is not None and found[0] else runs[0].id
    if st.query_params.get("run") != run_label(by_id[shown]):  # else the binding reads it (a set adds a history entry)
        st.session_state["run"] = shown
# bound to ?run= ("name (id)"): choosing another model replaces the URL, it adds no history entry
run_id = st.selectbox("Model (a finished run)", list(by_id), key="run", bind="query-params",
                      format_func=lambda rid: run_label(by_id[rid]))
st.caption(pv.run_summary(by_id[run_id]))
group = pv.seed_group(store, run_id)  # the finished runs of this configuration, any seed
use_seeds = len(group) > 1 and st.toggle(f"Average the {len(group)} seeds of this configuration (deep ensemble)",
                                         value=True, key="predict_ensemble", help=pv.ENSEMBLE_HELP)
model_key = "+".join(group) if use_seeds else run_id  # what the cached predictions are keyed by
try:
    predictor = (pv.load_ensemble(str(store.db_path), tuple(group), store) if use_seeds
                 else pv.load_predictor(str(store.db_path), run_id, store))
except EngineError as exc:
    st.error(f"Cannot load the model of run {plain(run_id)}: {plain(exc)}")
    st.stop()

many = st.multiselect(
    "Also compare several models on each clip", list(by_id), key="predict_many",
    default=mp.default_runs(runs, st.session_state.get("_cmp_sel", [])) if "predict_many" not in st.session_state else None,
    format_func=lambda rid: pv.run_option(by_id[rid]),
    help="Default: the runs selected on the Compare page, else the best run of each configuration by "
         "validation accuracy. Each clip then gets a models x classes table of probabilities, "
         "the model chosen above first.")
panel = mp.panel_runs(run_id, many)  # the comparison always includes the model whose answer is shown
lead = None
if use_seeds:  # the answer shown is the seeds' mean: it leads the panel in place of the one run
    lead = (pv.ensemble_label(by_id[run_id].name, len(group)), model_key, predictor)
    panel = panel[1:]

# ---- the audio --------------------------------------------------------------------------
pv.example_buttons(data_setting())
source = st.radio("Audio", ["Upload files", "Record", pv.DATASET_SOURCE], horizontal=True, key="predict_source")
clips: list[pv.ClipInput] = []
if source == "Upload files":
    files = st.file_uploader(
        "Audio files (WAV, FLAC, OGG or MP3, up to 50 MB each)", type=list(SUPPORTED_FORMATS),
        accept_multiple_files=True, key="predict_upload",
    )
    clips = [pv.clip_input(f.name, f.getvalue(), f.type) for f in files or []]
elif source == "Record":
    recording = st.audio_input("Record a clip (a few seconds of one instrument)", key="predict_record")
    if recording is not None:
        clips = [pv.clip_input("recording.wav", recording.getvalue(), "audio/wav")]
else:
    picked = pv.dataset_clip_picker(data_setting())
    clips = [picked] if picked is not None else []

if not clips:
    st.caption("Nothing to classify yet.")
    st.stop()

# ---- the answers ------------------------------------------------------------------------
summary = st.container()
rows = []
for clip in clips:
    rows.append(pv.render_clip(clip, model_key, predictor, by_id[run_id]))
    if len(panel) + (lead is not None) >= 2 and rows[-1]["predicted"] is not None:
        results, failures = pv.predict_with_runs(clip, panel, store, {rid: by_id[rid].name for rid in panel}, lead)
        with st.container(border=True):
            mp.render_runs_panel(clip.name, clip.true_label, results, failures)
if len(rows) > 1:
    with summary:
        st.markdown("**Summary**")
        st.dataframe(pv.summary_frame(rows), hide_index=True, width="stretch")
