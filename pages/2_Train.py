"""Train: every hyperparameter as a widget (defaults = the study's base), Start, live progress,
then the run's results: metrics, curves, per-class accuracy and confusion matrices."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.augment import AUGMENTATIONS, parse_augment
from engine.config import INPUTS, FeatureConfig, ModelConfig, RunConfig, TrainConfig
from engine.errors import EngineError
from engine.labels import SHORT_NAMES
from engine.model import fast_bfloat16
from engine.naming import run_name
from engine.jobs import RESUMABLE_STATUSES
from engine.store import ACTIVE
from ui import charts, live
from ui.colors import run_colors, swatch
from ui.compare import history_frame
from ui.common import (
    data_setting, describe_data, fmt_pct, get_manager, get_store, job_progress, render_sidebar,
    plain,
    run_label,
)

st.set_page_config(page_title="Train · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Train")

try:
    from engine.presets import PRESETS
except ImportError:
    PRESETS = {"study": RunConfig()}

store = get_store()
data = data_setting()
FORM = "train_form"  # session_state: the form's values (survives page switches; widget keys do not)
WHOLE = "whole clip"


def widget_values(config: RunConfig) -> dict:
    """RunConfig -> {widget key: value}."""
    values = {f"w.{k}": v for k, v in config.flat().items() if k != "data"}
    values["w.features.frames"] = WHOLE if config.features.frames is None else config.features.frames
    values["w.train.grad_clip"] = float(config.train.grad_clip or 0.0)
    values["w.train.augment"] = list(parse_augment(config.train.augment))  # a multiselect holds a list
    return values


def apply_preset() -> None:
    st.session_state[FORM] = widget_values(PRESETS[st.session_state["preset"]])
    st.session_state.update(st.session_state[FORM])


if FORM not in st.session_state:  # the first preset (the study's base, with its 2019 inputs)
    st.session_state[FORM] = widget_values(next(iter(PRESETS.values())))
for key, value in st.session_state[FORM].items():
    st.session_state.setdefault(key, value)

# ---- configuration ----------------------------------------------------------------------
with st.expander("Configuration", expanded="run" not in st.query_params):
    top = st.columns([2, 2, 3])
    top[0].selectbox("Preset", list(PRESETS), key="preset", on_change=apply_preset,
                     help="study = the student study's base configuration; recommended = our fixes.")
    name = top[1].text_input("Run name", placeholder="(optional: named by what differs from the preset)")
    top[2].markdown(f"Dataset: **{describe_data(data)}**  \n(change it on the home page)")

    f, m, t = st.columns(3)
    with f:
        st.markdown("**Features**")
        st.selectbox("representation", ["spectral", "logmel", "waveform"], key="w.features.representation",
                     help="spectral: 13 MFCC + centroid + 7 contrast per frame; logmel: the 128 mel-band "
                          "energies in dB per frame; waveform: raw 512-sample frames.")
        frame_options = [3, WHOLE]
        if st.session_state["w.features.frames"] not in frame_options:
            frame_options.insert(0, st.session_state["w.features.frames"])
        st.radio("frames", frame_options, key="w.features.frames", horizontal=True,
                 help="The study kept only the first 3 frames (0.07 s) of each clip.")
        st.checkbox("+ 12 chroma", key="w.features.chroma")
        st.checkbox("+ deltas", key="w.features.deltas")
        st.selectbox("inputs as librosa", list(INPUTS), key="w.features.inputs",
                     help="librosa_0.7: the study's 2019 inputs (resampy kaiser_best resampling, STFT frames padded "
                          "by reflection); librosa_0.11: today's (soxr, zero padding). They differ in the first "
                          "and last two frames.")
        st.checkbox("per-clip normalisation (CMVN)", key="w.features.clip_norm",
                    help="Centre and scale every feature by its own mean and std over the clip's frames. "
                         "Removes a fixed EQ, microphone colour or level from MFCC / log-mel values, and "
                         "with it the clip's average spectral envelope.")
    with m:
        st.markdown("**Model**")
        st.selectbox("architecture", ["study", "study_2plus1", "sequence", "waveform"], key="w.model.arch",
                     help="study: all frames flattened into ONE time step (as in the study); study_2plus1: plus a "
                          "second small LSTM; sequence: the LSTM reads the clip frame by frame.")
        st.number_input("hidden size", 1, 4096, key="w.model.hidden_size")
        st.number_input("LSTM layers", 1, 8, key="w.model.num_layers")
        st.number_input("dropout", 0.0, 0.95, step=0.05, key="w.model.dropout")
        st.checkbox("bidirectional (sequence archs)", key="w.model.bidirectional")
        st.selectbox("pooling over time (sequence archs)", ["last", "mean", "max", "stats"], key="w.model.pooling",
                     help="How the frame-by-frame outputs become one vector: the last state, their mean, "
                          "their max, or stats = mean and standard deviation side by side (x-vector pooling).")
        st.number_input("extra LSTM size (study_2plus1)", 1, 4096, key="w.model.extra_hidden")
    with t:
        st.markdown("**Training**")
        a, b = st.columns(2)
        a.selectbox("optimizer", ["adam", "sgd", "adadelta"], key="w.train.optimizer")
        b.number_input("learning rate", 1e-7, 10.0, format="%.1e", step=1e-5, key="w.train.lr")
        a.number_input("batch size", 1, 100_000, key="w.train.batch_size")
        b.number_input("epochs", 1, 10_000, key="w.train.epochs")
        a.number_input("momentum (SGD)", 0.0, 0.999, step=0.1, key="w.train.momentum")
        b.number_input("rho (Adadelta)", 0.0, 0.999, step=0.05, key="w.train.rho")
        a.number_input("eps (Adadelta)", 1e-12, 1.0, format="%.0e", key="w.train.eps")
        b.number_input("weight decay", 0.0, 1.0, format="%.1e", step=1e-5, key="w.train.weight_decay")
        a.number_input("seed", 0, 2**31 - 1, key="w.train.seed")
        b.number_input("gradient clip (0 = off)", 0.0, 1000.0, step=0.5, key="w.train.grad_clip")
        a.selectbox("keep model of", ["last", "best"], key="w.train.select",
                    format_func=lambda s: {"last": "last epoch", "best": "best validation epoch"}[s])
        b.checkbox("standardize", help="scale features by training mean/std", key="w.train.standardize")
        b.checkbox("class weighting", key="w.train.class_weighting")
        a.selectbox("precision", ["float32", "bfloat16"], key="w.train.precision",
                    help="bfloat16: mixed precision, matrix products in bfloat16 (measured 1.2-1.7x faster "
                         "on a CPU with AVX512-BF16; slower where the hardware lacks bfloat16 units); results "
                         "differ slightly from float32.")
        device = get_manager().device
        if st.session_state["w.train.precision"] == "bfloat16" and not fast_bfloat16(device):
            st.warning(f"This {device.upper()} has no native bfloat16 arithmetic: "
                       "bfloat16 will train slower than float32 here.")

    st.markdown("**Augmentation** (training clips only; validation, cross-collection validation and test "
                "are never augmented)")
    g = st.columns([3, 1, 1, 1, 1])
    g[0].multiselect("audio augmentation", list(AUGMENTATIONS), key="w.train.augment",
                     help="Random changes of each training clip's audio, made once and cached apart from the "
                          "clean clip: gain = level -12..+6 dB; eq = random shelves and peaks (+-6 dB), like "
                          "another instrument body or microphone; speed = resampled by up to +-1 semitone "
                          "(pitch and formants move together); noise = background noise at 15-40 dB SNR. "
                          "Costs one feature extraction per copy, once; epochs stay as fast.")
    g[1].number_input("copies per clip", 1, 32, key="w.train.augment_views",
                      help="Augmented copies of each training clip; every epoch reads each clip clean or as "
                           "one of its copies, at random.")
    g[2].number_input("augmentation seed", 0, 2**31 - 1, key="w.train.augment_seed",
                      help="Seed of the augmented copies (the same seed reuses the cached copies).")
    g[3].number_input("time mask (frames)", 0, 1000, key="w.train.time_mask",
                      help="SpecAugment: in every training batch, up to this many consecutive frames of each "
                           "clip are set to 0 (0 = off).")
    g[4].number_input("feature mask (rows)", 0, 1000, key="w.train.freq_mask",
                      help="SpecAugment: up to this many consecutive feature rows (MFCC coefficients, mel "
                           "bands) of each clip are set to 0 in every training batch (0 = off).")

    st.session_state[FORM] = {k: st.session_state[k] for k in st.session_state[FORM]}
    start = st.button("Start training", type="primary")

if start:
    w = st.session_state[FORM]
    section = lambda s: {k.split(".", 2)[2]: v for k, v in w.items() if k.startswith(f"w.{s}.")}  # noqa: E731
    try:
        feats = section("features")
        feats["frames"] = None if feats["frames"] == WHOLE else int(feats["frames"])
        train = section("train")
        train["grad_clip"] = train["grad_clip"] or None
        for key in ("batch_size", "epochs", "seed", "augment_views", "augment_seed", "time_mask", "freq_mask"):
            train[key] = int(train[key])
        train["augment"] = ",".join(train["augment"])
        model = section("model")
        for key in ("hidden_size", "num_layers", "extra_hidden"):
            model[key] = int(model[key])
        base = PRESETS[st.session_state["preset"]]
        config = RunConfig(data=data, features=FeatureConfig(**{**base.features.__dict__, **feats}),
                           model=ModelConfig(**model), train=TrainConfig(**{**base.train.__dict__, **train}))
        preset = st.session_state["preset"]  # unnamed runs are named by what differs from the preset
        auto_name = run_name(config, base.with_values(data=data), "study base" if preset == "study" else preset)
        run_id = get_manager().submit(config, name=name.strip() or auto_name, tags=("train-page",))
    except EngineError as exc:
        st.error(f"Cannot start: {plain(exc)}")
    else:
        st.session_state["run"] = run_id
        st.query_params["run"] = run_id
        st.rerun()

# ---- which run --------------------------------------------------------------------------
if "train_flash" in st.session_state:
    st.success(st.session_state.pop("train_flash"))
recent = store.list_runs(limit=30)
run_id = st.query_params.get("run") or st.session_state.get("run")
if run_id is None:
    if not recent:
        st.info("Set the configuration above and press **Start training**. Its progress and results appear here.")
        st.stop()
    st.caption("Or look at an earlier run:")
ids = [r.id for r in recent]
if run_id and run_id not in ids:
    ids.insert(0, run_id)
labels = {r.id: f"{run_label(r)} · {r.status}" for r in recent}
chosen = st.selectbox("Run", ids, index=ids.index(run_id) if run_id in ids else None, format_func=lambda i: labels.get(i, i),
                      placeholder="choose a run")
if chosen is None:
    st.stop()
if chosen != run_id:
    st.session_state["run"] = chosen
    st.query_params["run"] = chosen
    run_id = chosen
try:
    record = store.get(run_id)
except EngineError as exc:
    st.error(plain(exc))
    st.stop()

color = run_colors(store, [run_id])[run_id]  # the run's colour on every page (ui.colors)
# plain() keeps a name from becoming Markdown (a link, an image the browser would fetch), html.escape from HTML
st.markdown(f"### {swatch(color, record.name)} Run {plain(html.escape(run_label(record)))}", unsafe_allow_html=True)
if record.notes:
    st.caption(f"Notes: {plain(record.notes)}")


def manage(record) -> None:
    """Rename, tag, write notes on or delete the run."""
    with st.expander("Name, tags, notes · delete"):
        with st.form(f"manage_{record.id}"):
            new_name = st.text_input("Name", value=record.name, key=f"m_name_{record.id}")
            new_tags = st.text_input("Tags (comma-separated)", value=", ".join(record.tags), key=f"m_tags_{record.id}")
            new_notes = st.text_area("Notes", value=record.notes, key=f"m_notes_{record.id}")
            if st.form_submit_button("Save name, tags and notes"):
                store.rename(record.id, new_name)
                store.set_tags(record.id, new_tags.split(","))
                store.set_notes(record.id, new_notes)
                st.session_state["train_flash"] = "Saved."
                st.rerun()
        active = record.status in ACTIVE
        sure = st.checkbox("Yes, delete this run, its model and its results", key=f"m_sure_{record.id}",
                           disabled=active, help="Cancel it first." if active else None)
        if st.button("Delete run", key=f"m_delete_{record.id}", disabled=active or not sure):
            try:
                store.delete(record.id)
            except EngineError as exc:
                st.error(f"Cannot delete: {plain(exc)}")
                return
            st.session_state.pop("run", None)
            st.query_params.pop("run", None)
            st.session_state["train_flash"] = f"Deleted run {plain(record.name)}."
            st.rerun()


manage(record)


# ---- live progress ----------------------------------------------------------------------
# Two timers, both cheap: the progress line every LIVE_EVERY_S reads the job manager's memory
# (one status query); the charts every CHARTS_EVERY_S ask the store whether an epoch was added
# and are rebuilt only then, from the new records alone (ui.live.LiveCharts). Each timer rerun
# still costs the server ~0.1-0.2 s of CPU here (docs/PERFORMANCE.md), hence the slow pace.
LIVE_EVERY_S, CHARTS_EVERY_S = 3.0, 10.0


def _progress_of(run_id: str) -> dict:
    try:
        return next((p for p in job_progress() if p.get("run_id") == run_id), {})
    except Exception:  # job manager unavailable: fall back on the store alone
        return {}


@st.fragment(run_every=LIVE_EVERY_S)
def live_status(run_id: str, epochs: int) -> None:
    status = store.status(run_id)
    if status not in ACTIVE:
        st.rerun()  # the whole page, which now shows the results
    p = _progress_of(run_id)  # trained by this server: its live line; else (another process) the store's count
    fraction, text = (p["fraction"], p["message"]) if p else live.progress_line({}, status, store.epochs_done(run_id),
                                                                                 epochs)
    st.progress(fraction, text=text)
    if st.button("Cancel run", key="cancel_current"):
        get_manager().cancel(run_id)
        st.rerun(scope="fragment")


@st.fragment(run_every=CHARTS_EVERY_S)
def live_charts(run_id: str) -> None:
    cache = st.session_state.setdefault("_live_charts", live.LiveCharts())
    specs = cache.update(store, run_id, color=color)
    if specs["steps"] is None and specs["accuracy"] is None:
        st.caption("The charts appear when the first epoch ends (the data is prepared first, once per "
                   "feature setting; later runs reuse it).")
        return
    a, b = st.columns(2)
    if specs["steps"] is not None:
        a.vega_lite_chart(specs["steps"], width="stretch")
    if specs["accuracy"] is not None:
        b.vega_lite_chart(specs["accuracy"], width="stretch")


if record.status in ACTIVE:
    live_status(run_id, record.config.train.epochs)
    live_charts(run_id)
    st.stop()

# ---- results ----------------------------------------------------------------------------
status_line = f"**{record.status}** after {record.epochs_done} epoch(s)"
if record.duration:
    status_line += f" in {record.duration:.0f} s on {record.device or '?'}"
if record.best_epoch:
    status_line += f"; model kept from epoch {record.best_epoch}"
if record.status == "finished" and record.warning:
    st.warning(f"{status_line}.\n\n**{record.warning}**")
elif record.status == "finished":
    st.success(status_line)
elif record.status in ("diverged", "failed"):
    st.error(f"{status_line}.\n\n{record.error or 'no error message recorded'}")
else:
    st.warning(f"{status_line}." + (f"\n\n{record.error}" if record.error else ""))
if record.status in RESUMABLE_STATUSES:
    again = st.columns([1, 1, 3])
    can_resume = store.has_checkpoint(run_id)
    if again[0].button(f"Resume from epoch {record.epochs_done}" if can_resume else "Resume (starts over: no checkpoint)",
                       help="Queue this run again; training continues from its last saved epoch."):
        get_manager().resume(run_id)
        st.rerun()
    if again[1].button("Start again as a new run", help="A new run with the same configuration."):
        new_id = get_manager().restart(run_id)
        st.session_state["run"] = new_id
        st.query_params["run"] = new_id
        st.rerun()

metrics = record.metrics or {}
SPLIT_HELP = {"validation_shift": "The validation clips played through a held-out recording chain (band-limited "
                                  "microphone, compressor, room, MP3 codec) that training never uses: how well "
                                  "the model carries over to another recording channel. A diagnostic: "
                                  "configurations are chosen on the source view below.",
              "validation_source": "The validation clips with their sound source changed in a way training "
                                   "never sees (the spectral envelope moved by 2-4 semitones with the pitch kept, "
                                   "the pitch by up to 2 semitones with the envelope kept), then played through "
                                   "the same held-out recording chain: a new instrument heard through a new "
                                   "channel. The recommended preset is chosen on this, never on test "
                                   "(docs/PROTOCOL.md)."}
for split, label in (("validation", "Validation"), ("validation_shift", "Cross-collection validation"),
                     ("validation_source", "Cross-collection validation (source)"),
                     ("test", "Test")):
    m = metrics.get(split)
    if not m:
        continue
    cols = st.columns([1, 2, 2, 2])
    cols[0].markdown(f"**{label}**  \n{m.get('n', '?')} clips", help=SPLIT_HELP.get(split))
    cols[1].metric("accuracy", fmt_pct(m.get("accuracy")))
    cols[2].metric("balanced accuracy", fmt_pct(m.get("balanced_accuracy")), help="mean per-class recall")
    cols[3].metric("macro-F1", fmt_pct(m.get("macro_f1")))
if not metrics:
    st.info("No metrics: the run ended before its first epoch finished.")

hist = history_frame([record])
if len(hist):
    st.markdown("**Training curves**")
    c = st.columns(3)
    log_scale = c[0].toggle("log-scale loss", value=True)
    smoothing = c[1].slider("smoothing", 0.0, 0.95, 0.0, 0.05)
    x = c[2].radio("x axis", ["epoch", "seconds"], horizontal=True)
    a, b = st.columns(2)
    own = {record.name: color}
    a.altair_chart(charts.loss_curves(hist, x=x, log_scale=log_scale, smoothing=smoothing, colors=own), width="stretch")
    b.altair_chart(charts.accuracy_curves(hist, x=x, smoothing=smoothing, colors=own, columns={
        "val_accuracy": "validation accuracy", "val_shift_accuracy": "cross-collection validation",
        "val_source_accuracy": "cross-collection validation (source)",
        "train_accuracy": "train accuracy", "val_balanced_accuracy": "validation balanced acc."}), width="stretch")
    steps = store.step_losses(run_id)
    if steps:
        spe = max(1, len(steps) // max(1, record.epochs_done))
        st.altair_chart(charts.step_loss_chart(steps, steps_per_epoch=spe, log_scale=log_scale, color=color),
                        width="stretch")

if metrics:
    st.markdown("**Per class**")
    rows = [{"class": name, "split": split, "accuracy": acc}
            for split in ("validation", "test") if metrics.get(split)
            for name, acc in zip(SHORT_NAMES, metrics[split]["per_class_accuracy"])]
    st.altair_chart(charts.per_class_bars(pd.DataFrame(rows), group="split", y_title="accuracy (recall)"),
                    width="stretch")
    normalize = st.toggle("row-normalised confusion matrices", value=False)
    cols = st.columns(2)
    for col, split in zip(cols, ("validation", "test")):
        if metrics.get(split):
            col.altair_chart(charts.confusion_heatmap(metrics[split]["confusion"], SHORT_NAMES, normalize=normalize,
                                                      title=split), width="stretch")

with st.expander("Configuration of this run"):
    st.code(json.dumps(record.config.to_dict(), indent=2), language="json")
if record.status == "finished" and (Path(__file__).parent / "4_Predict.py").exists():
    st.page_link("pages/4_Predict.py", label="Use this model on your own audio →")
