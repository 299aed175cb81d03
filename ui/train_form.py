"""The Train page's configuration form: every hyperparameter as a widget (keys "w.<dotted name>"),
the preset picker and the Start button. The form's values become a RunConfig through the
engine's one parser (engine.core.config.config_from_values), as CLI flags do.

- widget_values(config) -> {widget key: value}    a configuration as the widgets show it
- form_values(form) -> {dotted name: value}        the widgets' values as the parser reads them
- config_from_form(form, base, data) -> RunConfig
- render_form(presets, data) -> (name, start)      draws the form (Streamlit)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from engine.data.augment import AUGMENTATIONS, parse_augment
from engine.core.config import INPUTS, RunConfig, config_from_values
from engine.learn import model as engine_model
from ui import common
from ui.common import describe_data

FORM = "train_form"  # session_state: the form's values (survives page switches; widget keys do not)
PREFIX = "w."
WHOLE = "whole clip"  # the frames radio's "no truncation" choice
# Every widget of the form is bound to a URL query parameter of its key ("?w.train.lr=0.003"):
# Streamlit writes a changed value into the URL (replacing the history entry, so Back does not
# step through each edit) and reads it back when the page is reloaded or the link shared.
BIND = "query-params"


def widget_values(config: RunConfig) -> dict[str, Any]:
    """RunConfig -> {widget key: value} ("w.train.lr": 0.0001, "w.features.frames": 3 or WHOLE)."""
    values = {f"{PREFIX}{k}": v for k, v in config.flat().items() if k != "data"}
    values[f"{PREFIX}features.frames"] = WHOLE if config.features.frames is None else config.features.frames
    values[f"{PREFIX}train.grad_clip"] = float(config.train.grad_clip or 0.0)
    values[f"{PREFIX}train.augment"] = list(parse_augment(config.train.augment))  # a multiselect holds a list
    return values


def form_values(form: Mapping[str, Any]) -> dict[str, Any]:
    """{widget key: value} -> {dotted name: value} for config_from_values: the widgets' own
    conventions undone (gradient clip 0 = off = None; "whole clip" and the augmentation list
    are read by the parser)."""
    values = {key[len(PREFIX):]: value for key, value in form.items() if key.startswith(PREFIX)}
    if "train.grad_clip" in values:
        values["train.grad_clip"] = values["train.grad_clip"] or None
    return values


def config_from_form(form: Mapping[str, Any], base: RunConfig, data: str) -> RunConfig:
    """The run the form describes: `base` (the chosen preset) with every widget's value and the
    dataset `data`. ConfigError (naming the key) when a value does not fit."""
    return config_from_values({**form_values(form), "data": data}, base)


def _apply_preset(presets: Mapping[str, RunConfig]) -> None:
    st.session_state[FORM] = widget_values(presets[st.session_state["preset"]])
    st.session_state.update(st.session_state[FORM])


def render_form(presets: Mapping[str, RunConfig], data: str, *, expanded: bool) -> tuple[str, bool]:
    """Draw the configuration form; returns (run name typed, Start pressed). The form's values
    live in st.session_state[FORM] (they survive page switches)."""
    if FORM not in st.session_state:  # the preset in the URL, else the first (the study's base)
        preset = st.query_params.get("preset")
        st.session_state[FORM] = widget_values(presets[preset if preset in presets else next(iter(presets))])
    for key, value in st.session_state[FORM].items():
        if key not in st.query_params:  # a value in the URL (a reload, a shared link) wins
            st.session_state.setdefault(key, value)
    with st.expander("Configuration", expanded=expanded):
        top = st.columns([2, 2, 3])
        top[0].selectbox("Preset", list(presets), key="preset", bind=BIND, on_change=_apply_preset, args=(presets,),
                         help="study = the student study's base configuration; recommended = our fixes.")
        name = top[1].text_input("Run name", placeholder="(optional: named by what differs from the preset)")
        top[2].markdown(f"Dataset: **{describe_data(data)}**  \n(change it on the home page)")
        f, m, t = st.columns(3)
        with f:
            _features()
        with m:
            _model()
        with t:
            _training()
        _augmentation()
        st.session_state[FORM] = {k: st.session_state.get(k, v) for k, v in st.session_state[FORM].items()}
        start = st.button("Start training", type="primary")
    return name, start


def _features() -> None:
    st.markdown("**Features**")
    st.selectbox("representation", ["spectral", "logmel", "waveform"], key="w.features.representation", bind=BIND,
                 help="spectral: 13 MFCC + centroid + 7 contrast per frame; logmel: the 128 mel-band "
                      "energies in dB per frame; waveform: raw 512-sample frames.")
    frame_options: list[Any] = [3, WHOLE]
    frames = st.session_state.get("w.features.frames", st.session_state[FORM]["w.features.frames"])
    if frames not in frame_options and frames != str(WHOLE):
        frame_options.insert(0, frames)
    st.radio("frames", frame_options, key="w.features.frames", bind=BIND, horizontal=True,
             help="The study kept only the first 3 frames (0.07 s) of each clip.")
    st.checkbox("+ 12 chroma", key="w.features.chroma", bind=BIND)
    st.checkbox("+ deltas", key="w.features.deltas", bind=BIND)
    st.selectbox("inputs as librosa", list(INPUTS), key="w.features.inputs", bind=BIND,
                 help="librosa_0.7: the study's 2019 inputs (resampy kaiser_best resampling, STFT frames padded "
                      "by reflection); librosa_0.11: today's (soxr, zero padding). They differ in the first "
                      "and last two frames.")
    st.checkbox("per-clip normalisation (CMVN)", key="w.features.clip_norm", bind=BIND,
                help="Centre and scale every feature by its own mean and std over the clip's frames. "
                     "Removes a fixed EQ, microphone colour or level from MFCC / log-mel values, and "
                     "with it the clip's average spectral envelope.")


def _model() -> None:
    st.markdown("**Model**")
    st.selectbox("architecture", ["study", "study_2plus1", "sequence", "waveform"], key="w.model.arch", bind=BIND,
                 help="study: all frames flattened into ONE time step (as in the study); study_2plus1: plus a "
                      "second small LSTM; sequence: the LSTM reads the clip frame by frame.")
    st.number_input("hidden size", 1, 4096, key="w.model.hidden_size", bind=BIND)
    st.number_input("LSTM layers", 1, 8, key="w.model.num_layers", bind=BIND)
    st.number_input("dropout", 0.0, 0.95, step=0.05, key="w.model.dropout", bind=BIND)
    st.checkbox("bidirectional (sequence archs)", key="w.model.bidirectional", bind=BIND)
    st.selectbox("pooling over time (sequence archs)", ["last", "mean", "max", "stats"], key="w.model.pooling", bind=BIND,
                 help="How the frame-by-frame outputs become one vector: the last state, their mean, "
                      "their max, or stats = mean and standard deviation side by side (x-vector pooling).")
    st.number_input("extra LSTM size (study_2plus1)", 1, 4096, key="w.model.extra_hidden", bind=BIND)


def _training() -> None:
    st.markdown("**Training**")
    a, b = st.columns(2)
    a.selectbox("optimizer", ["adam", "sgd", "adadelta"], key="w.train.optimizer", bind=BIND)
    b.number_input("learning rate", 1e-7, 10.0, format="%.1e", step=1e-5, key="w.train.lr", bind=BIND)
    a.number_input("batch size", 1, 100_000, key="w.train.batch_size", bind=BIND)
    b.number_input("epochs", 1, 10_000, key="w.train.epochs", bind=BIND)
    a.number_input("momentum (SGD)", 0.0, 0.999, step=0.1, key="w.train.momentum", bind=BIND)
    b.number_input("rho (Adadelta)", 0.0, 0.999, step=0.05, key="w.train.rho", bind=BIND)
    a.number_input("eps (Adadelta)", 1e-12, 1.0, format="%.0e", key="w.train.eps", bind=BIND)
    b.number_input("weight decay", 0.0, 1.0, format="%.1e", step=1e-5, key="w.train.weight_decay", bind=BIND)
    a.number_input("seed", 0, 2**31 - 1, key="w.train.seed", bind=BIND)
    b.number_input("gradient clip (0 = off)", 0.0, 1000.0, step=0.5, key="w.train.grad_clip", bind=BIND)
    a.selectbox("keep model of", ["last", "best"], key="w.train.select", bind=BIND,
                format_func=lambda s: {"last": "last epoch", "best": "best validation epoch"}[s])
    b.checkbox("standardize", help="scale features by training mean/std", key="w.train.standardize", bind=BIND)
    b.checkbox("class weighting", key="w.train.class_weighting", bind=BIND)
    a.selectbox("precision", ["float32", "bfloat16"], key="w.train.precision", bind=BIND,
                help="bfloat16: mixed precision, matrix products in bfloat16. It pays only where the products "
                     "are most of the time: for the study model 1.07x on a 2-core Xeon with AMX, 1.2-1.7x on an "
                     "earlier CPU with AVX512-BF16 (benchmarks/training.py, 2026-11-30, issue #14; current "
                     "figures with their machine and date: docs/PERFORMANCE.md, Recorded figures); slower "
                     "where the hardware lacks bfloat16 units. Results differ slightly from float32.")
    device = common.get_manager().device
    if st.session_state["w.train.precision"] == "bfloat16" and not engine_model.fast_bfloat16(device):
        st.warning(f"This {device.upper()} has no native bfloat16 arithmetic: "
                   "bfloat16 will train slower than float32 here.")


def _augmentation() -> None:
    st.markdown("**Augmentation** (training clips only; validation, cross-collection validation and test "
                "are never augmented)")
    g = st.columns([3, 1, 1, 1, 1])
    g[0].multiselect("audio augmentation", list(AUGMENTATIONS), key="w.train.augment", bind=BIND,
                     help="Random changes of each training clip's audio, made once and cached apart from the "
                          "clean clip: gain = level -12..+6 dB; eq = random shelves and peaks (+-6 dB), like "
                          "another instrument body or microphone; speed = resampled by up to +-1 semitone "
                          "(pitch and formants move together); noise = background noise at 15-40 dB SNR. "
                          "Costs one feature extraction per copy, once; epochs stay as fast.")
    g[1].number_input("copies per clip", 1, 32, key="w.train.augment_views", bind=BIND,
                      help="Augmented copies of each training clip; every epoch reads each clip clean or as "
                           "one of its copies, at random.")
    g[2].number_input("augmentation seed", 0, 2**31 - 1, key="w.train.augment_seed", bind=BIND,
                      help="Seed of the augmented copies (the same seed reuses the cached copies).")
    g[3].number_input("time mask (frames)", 0, 1000, key="w.train.time_mask", bind=BIND,
                      help="SpecAugment: in every training batch, up to this many consecutive frames of each "
                           "clip are set to 0 (0 = off).")
    g[4].number_input("feature mask (rows)", 0, 1000, key="w.train.freq_mask", bind=BIND,
                      help="SpecAugment: up to this many consecutive feature rows (MFCC coefficients, mel "
                           "bands) of each clip are set to 0 in every training batch (0 = off).")
