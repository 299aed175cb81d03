"""The Train page's configuration form: every hyperparameter as a widget (keys "w.<dotted name>"),
the preset picker and the Start button. The form's values become a RunConfig through the
engine's one parser (engine.core.config.config_from_values), as CLI flags do.

Only the inputs that apply to the chosen optimizer, architecture, features and augmentation
are drawn (`not_applicable`); an input that does not apply takes the preset's value, so a
momentum typed for SGD never travels with an Adam run. Labels are plain words; the jargon
(CMVN, librosa versions, rho) sits in each input's help. The common inputs come first, the
rest in a "More settings" expander.

- not_applicable(values) -> set[str]               dotted names that do not apply to these values
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
# Checkbox labels wrap (wrap=True) rather than end in '...' in a narrow column.
# Every widget of the form is bound to a URL query parameter of its key ("?w.train.lr=0.003"):
# Streamlit writes a changed value into the URL (replacing the history entry, so Back does not
# step through each edit) and reads it back when the page is reloaded or the link shared.
BIND = "query-params"

SEQUENCE_ARCHS = ("sequence", "waveform")  # the archs that read frame by frame (ModelConfig)
OPTIMIZERS = {"adam": "Adam", "sgd": "SGD", "adadelta": "Adadelta"}
ARCHS = {"study": "study: the whole input as one step", "study_2plus1": "study + a small second LSTM (2+1)",
         "sequence": "sequence: reads the clip frame by frame", "waveform": "waveform: frame by frame, raw audio",
         "linear": "linear: one layer on the clip's feature statistics"}
REPRESENTATIONS = {"spectral": "spectral: MFCC, centroid, contrast", "logmel": "log-mel spectrogram",
                   "pcen": "mel spectrogram, PCEN", "waveform": "raw waveform"}
LIBROSA = {"librosa_0.11": "today's (librosa 0.11)", "librosa_0.7": "the study's, 2019 (librosa 0.7)"}
POOLING = {"last": "the last state", "mean": "their mean", "max": "their maximum",
           "stats": "mean and spread (stats)"}


def not_applicable(values: Mapping[str, Any]) -> set[str]:
    """Dotted names of the inputs that change nothing for these values ({dotted name: value},
    the form's or config.flat()), read from the config dataclasses (engine.core.config):
    momentum is SGD's, rho and eps Adadelta's; bidirectional and pooling belong to the archs
    that read frame by frame, the second LSTM's size to study_2plus1, no LSTM setting to the
    linear model; chroma and deltas are
    added to spectral or log-mel frames, not to raw waveform; the augmented copies' count and
    seed matter only with an augmentation."""
    optimizer, arch = values.get("train.optimizer"), values.get("model.arch")
    out: set[str] = set()
    if optimizer != "sgd":
        out.add("train.momentum")
    if optimizer != "adadelta":
        out |= {"train.rho", "train.eps"}
    if arch not in SEQUENCE_ARCHS:
        out |= {"model.bidirectional", "model.pooling"}
    if arch != "study_2plus1":
        out.add("model.extra_hidden")
    if arch == "linear":  # no LSTM: only dropout and the head
        out |= {"model.hidden_size", "model.num_layers", "model.bidirectional", "model.pooling"}
    if values.get("features.representation") == "waveform":
        out |= {"features.chroma", "features.deltas"}
    if not values.get("train.augment"):
        out |= {"train.augment_views", "train.augment_seed"}
    return out


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
    """The run the form describes: `base` (the chosen preset) with the value of every widget
    that applies (`not_applicable`: the rest keep the preset's) and the dataset `data`.
    ConfigError (naming the key) when a value does not fit."""
    values = form_values(form)
    for key in not_applicable(values):
        values.pop(key, None)
    return config_from_values({**values, "data": data}, base)


def _apply_preset(presets: Mapping[str, RunConfig]) -> None:
    st.session_state[FORM] = widget_values(presets[st.session_state["preset"]])
    st.session_state.update(st.session_state[FORM])


def _value(key: str) -> Any:
    """The current value of widget `key` ("w.train.optimizer"), drawn or not."""
    return st.session_state.get(key, st.session_state[FORM].get(key))


def render_form(presets: Mapping[str, RunConfig], data: str) -> tuple[str, bool]:
    """Draw the configuration form; returns (run name typed, Start pressed). The form's values
    live in st.session_state[FORM] (they survive page switches and inputs that are hidden
    because they do not apply)."""
    if FORM not in st.session_state:  # the preset in the URL, else the first (the study's base)
        preset = st.query_params.get("preset")
        st.session_state[FORM] = widget_values(presets[preset if preset in presets else next(iter(presets))])
    for key, value in st.session_state[FORM].items():
        if key not in st.query_params:  # a value in the URL (a reload, a shared link) wins
            st.session_state.setdefault(key, value)
    top = st.columns([2, 2, 3])
    top[0].selectbox("Preset", list(presets), key="preset", bind=BIND, on_change=_apply_preset, args=(presets,),
                     help="study = the student study's base configuration; recommended = our fixes.")
    name = top[1].text_input("Run name", placeholder="(optional: named by what differs from the preset)")
    top[2].markdown(f"Dataset: **{describe_data(data)}**  \n(change it on the home page)")
    hidden = not_applicable(form_values({k: _value(k) for k in st.session_state[FORM]}))
    f, m, t = st.columns(3)
    with f:
        _features()
    with m:
        _model(hidden)
    with t:
        _training(hidden)
    with st.expander("More settings", icon=":material/tune:"):
        _more(hidden)
    st.session_state[FORM] = {k: st.session_state.get(k, v) for k, v in st.session_state[FORM].items()}
    start = st.button("Start training", type="primary")
    return name, start


def _frames_words(value: Any) -> str:
    """3 -> 'first 3 frames (0.07 s)'; 'whole clip' -> 'whole clip (3 s)'."""
    if value in (WHOLE, str(WHOLE)):
        return "whole clip (3 s)"
    return f"first {value} frames ({int(value) * 512 / 22050:.2f} s)"


def _features() -> None:
    st.markdown("**What the model hears**")
    st.selectbox("Input features", list(REPRESENTATIONS), key="w.features.representation", bind=BIND,
                 format_func=REPRESENTATIONS.get,
                 help="spectral: 13 MFCC + spectral centroid + 7 spectral-contrast bands per frame (the study's); "
                      "log-mel: the 128 mel-band energies in dB per frame; PCEN: the same bands through "
                      "per-channel energy normalisation, which divides out each band's slow level (microphone, "
                      "room, loudness); raw waveform: 512-sample frames.")
    frame_options: list[Any] = [3, WHOLE]
    frames = _value("w.features.frames")
    if frames not in frame_options and frames != str(WHOLE):
        frame_options.insert(0, frames)
    st.radio("Part of each clip", frame_options, key="w.features.frames", bind=BIND, horizontal=True,
             format_func=_frames_words,
             help="The study kept only the first 3 frames (0.07 s) of each 3-second clip; a frame is 512 "
                  "samples at 22,050 Hz.")
    st.checkbox("Normalise each clip (per-clip mean/variance)", key="w.features.clip_norm", bind=BIND, wrap=True,
                help="Per-clip cepstral mean and variance normalisation (CMVN): every feature is centred and "
                     "scaled by its own mean and std over the clip's frames. Removes a fixed EQ, microphone "
                     "colour or level from MFCC / log-mel values, and with it the clip's average spectral envelope.")


def _model(hidden: set[str]) -> None:
    st.markdown("**Model**")
    st.selectbox("Architecture", list(ARCHS), key="w.model.arch", bind=BIND, format_func=ARCHS.get,
                 help="study: all frames flattened into ONE time step of an LSTM (as in the study); study + a "
                      "small second LSTM: the study's \"2+1\"; sequence: the LSTM reads the clip frame by frame; "
                      "waveform: the same over raw-audio frames (each first projected); linear: no LSTM, one "
                      "layer on each feature's mean and spread over the clip (a logistic-regression baseline).")
    if "model.hidden_size" not in hidden:
        a, b = st.columns(2)
        a.number_input("LSTM units", 1, 4096, key="w.model.hidden_size", bind=BIND,
                       help="Hidden size: units per LSTM layer (the study: 500).")
        b.number_input("LSTM layers", 1, 8, key="w.model.num_layers", bind=BIND)
    st.number_input("dropout", 0.0, 0.95, step=0.05, key="w.model.dropout", bind=BIND,
                    help="Share of values set to 0 during training, between LSTM layers (and before the head "
                         "of the frame-by-frame models).")
    if "model.pooling" not in hidden:
        st.selectbox("Summarise the frames by", list(POOLING), key="w.model.pooling", bind=BIND,
                     format_func=POOLING.get,
                     help="Pooling over time: how the frame-by-frame outputs become one vector: the last state, "
                          "their mean, their max, or stats = mean and standard deviation side by side "
                          "(x-vector statistics pooling).")
    if "model.bidirectional" not in hidden:
        st.checkbox("Read both ways (bidirectional)", key="w.model.bidirectional", bind=BIND, wrap=True,
                    help="A second LSTM reads the frames backwards; their outputs are joined.")
    if "model.extra_hidden" not in hidden:
        st.number_input("Second LSTM's units", 1, 4096, key="w.model.extra_hidden", bind=BIND,
                        help="The study's \"2+1\": a second, single-layer LSTM of this size after the first.")


def _training(hidden: set[str]) -> None:
    st.markdown("**Training**")
    a, b = st.columns(2)
    a.selectbox("optimizer", list(OPTIMIZERS), key="w.train.optimizer", bind=BIND, format_func=OPTIMIZERS.get)
    b.number_input("learning rate", 1e-7, 10.0, format="%.1e", step=1e-5, key="w.train.lr", bind=BIND)
    a.number_input("batch size", 1, 100_000, key="w.train.batch_size", bind=BIND, help="Clips per training step.")
    b.number_input("epochs", 1, 10_000, key="w.train.epochs", bind=BIND, help="Passes over the training clips.")
    if "train.momentum" not in hidden:
        a.number_input("momentum", 0.0, 0.999, step=0.1, key="w.train.momentum", bind=BIND,
                       help="SGD's momentum: the share of the last step's direction kept in the next (0 = plain SGD).")
    if "train.rho" not in hidden:
        b.number_input("Adadelta decay", 0.0, 0.999, step=0.05, key="w.train.rho", bind=BIND,
                       help="Adadelta's rho: how slowly its running averages of squared gradients forget "
                            "(the study: 0.8).")
    if "train.eps" not in hidden:
        a.number_input("Adadelta epsilon", 1e-12, 1.0, format="%.0e", key="w.train.eps", bind=BIND,
                       help="Adadelta's eps, added for numerical stability (the study: 1e-6).")


def _more(hidden: set[str]) -> None:
    """The less-used inputs: feature extras, regularisation, selection, precision, augmentation."""
    f, m, t = st.columns(3)
    with f:
        if "features.chroma" not in hidden:
            st.checkbox("Add pitch classes (12 chroma values)", key="w.features.chroma", bind=BIND, wrap=True,
                        help="12 chroma values per frame: how much of each pitch class the frame holds.")
        if "features.deltas" not in hidden:
            st.checkbox("Add frame-to-frame changes (deltas)", key="w.features.deltas", bind=BIND, wrap=True,
                        help="First-order deltas of every feature: how each value changes from frame to frame.")
        st.selectbox("Audio decoding as in", list(INPUTS), key="w.features.inputs", bind=BIND, format_func=LIBROSA.get,
                     help="Which librosa's audio inputs to reproduce. librosa_0.7: the study's 2019 inputs (resampy "
                          "kaiser_best resampling, STFT frames padded by reflection); librosa_0.11: today's (soxr, "
                          "zero padding). They differ in the first and last two frames.")
    with m:
        st.checkbox("Scale features by the training set's mean and std", key="w.train.standardize", bind=BIND,
                    wrap=True,
                    help="Standardise: each feature centred and scaled by its mean and std over the training "
                         "split (measured on training only).")
        st.checkbox("Weight rare classes more", key="w.train.class_weighting", bind=BIND, wrap=True,
                    help="Class weighting: the loss of each class weighted by its inverse frequency in training.")
        st.selectbox("Keep the model of", ["last", "best"], key="w.train.select", bind=BIND,
                     format_func=lambda s: {"last": "the last epoch", "best": "the best validation epoch"}[s])
        st.number_input("weight decay", 0.0, 1.0, format="%.1e", step=1e-5, key="w.train.weight_decay", bind=BIND,
                        help="L2 penalty on the weights, applied by the optimizer.")
    with t:
        st.number_input("random seed", 0, 2**31 - 1, key="w.train.seed", bind=BIND,
                        help="Seeds the weights' initialisation, the batch order and dropout.")
        st.number_input("gradient clip (0 = off)", 0.0, 1000.0, step=0.5, key="w.train.grad_clip", bind=BIND,
                        help="The largest gradient norm a step may take; larger ones are scaled down.")
        _precision()
    _augmentation(hidden)


def _precision() -> None:
    st.selectbox("precision", ["float32", "bfloat16"], key="w.train.precision", bind=BIND,
                 help="bfloat16: mixed precision, matrix products in bfloat16. It pays only where the products "
                      "are most of the time: for the study model 1.07x on a 2-core Xeon with AMX, 1.2-1.7x on an "
                      "earlier CPU with AVX512-BF16 (benchmarks/training.py, 2026-11-30, issue #14; current "
                      "figures with their machine and date: docs/PERFORMANCE.md, Recorded figures); slower "
                      "where the hardware lacks bfloat16 units. Results differ slightly from float32.")
    device = common.get_manager().device
    if st.session_state["w.train.precision"] == "bfloat16" and not engine_model.fast_bfloat16(device):
        st.warning(f"This {device.upper()} has no native bfloat16 arithmetic: "
                   "bfloat16 will train slower than float32 here.")


def _augmentation(hidden: set[str]) -> None:
    st.markdown("**Augmentation** (training clips only; validation, cross-collection validation and test "
                "are never augmented)")
    g = st.columns([3, 1, 1, 1, 1, 1, 1])
    g[0].multiselect("audio augmentation", list(AUGMENTATIONS), key="w.train.augment", bind=BIND,
                     help="Random changes of each training clip's audio, made once and cached apart from the "
                          "clean clip: gain = level -12..+6 dB; eq = random shelves and peaks (+-6 dB), like "
                          "another instrument body or microphone; speed = resampled by up to +-1 semitone "
                          "(pitch and formants move together); noise = background noise at 15-40 dB SNR. "
                          "Costs one feature extraction per copy, once; epochs stay as fast.")
    if "train.augment_views" not in hidden:
        g[1].number_input("copies per clip", 1, 32, key="w.train.augment_views", bind=BIND,
                          help="Augmented copies of each training clip; every epoch reads each clip clean or as "
                               "one of its copies, at random.")
    if "train.augment_seed" not in hidden:
        g[2].number_input("augmentation seed", 0, 2**31 - 1, key="w.train.augment_seed", bind=BIND,
                          help="Seed of the augmented copies (the same seed reuses the cached copies).")
    g[3].number_input("time mask (frames)", 0, 1000, key="w.train.time_mask", bind=BIND,
                      help="SpecAugment: in every training batch, up to this many consecutive frames of each "
                           "clip are set to 0 (0 = off).")
    g[4].number_input("feature mask (rows)", 0, 1000, key="w.train.freq_mask", bind=BIND,
                      help="SpecAugment: up to this many consecutive feature rows (MFCC coefficients, mel "
                           "bands) of each clip are set to 0 in every training batch (0 = off).")
    g[5].number_input("mixup", 0.0, 10.0, step=0.1, key="w.train.mixup", bind=BIND,
                      help="Mixup: every training batch is blended with a shuffled copy of itself, features and "
                           "labels alike, with a weight drawn from Beta(mixup, mixup); 0.2 is the usual value, "
                           "0 = off. Smooths the decision boundaries; such runs train one at a time.")
    g[6].number_input("outlier exposure", 0.0, 10.0, step=0.1, key="w.train.outlier_exposure", bind=BIND,
                      help="Outlier exposure: every training batch is joined by as many clips of instruments outside "
                           "the 8 classes (basses, synth leads, percussion, rendered from the demo's soundfont), and "
                           "the model is trained to be unsure of them, with this weight (0.5 usual, 0 = off). For "
                           "Medley-solos-DB's 8 classes only; such runs train one at a time.")
