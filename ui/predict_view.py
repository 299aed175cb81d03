"""Helpers of the Predict page: choosing a run, turning uploads into clips, cached decoding and
prediction, the charts, and one result panel per clip.

Uploads stay in memory: bytes -> engine.data.audio.load_audio(bytes, max_bytes=MAX_UPLOAD_BYTES);
nothing is written to disk under a name the user chose. Decoding is cached per file hash,
predictions per (run, file hash). A file that cannot be used gets an st.error naming it and
the other files go on. Audio with no usable signal (silent, under 0.25 s, absurd levels) is
such a file: an error, never a label. A clip shorter than a training clip gets a warning, and so
does a clip (or a window of a long one) that the run's out-of-distribution check flags; the
probabilities are the run's calibrated ones and the panel says so (engine.learn.trust).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from engine.data.audio import MAX_UPLOAD_BYTES, MODEL_SAMPLE_RATE, load_audio
from engine.core.errors import AudioError, EngineError
from engine.core.labels import SUBSETS, short_name
from engine.learn.ood import ACCEPT_RATE
from engine.learn.trust import NO_OOD_CHECK, UNCALIBRATED
from ui import charts
from ui.common import fmt_pct, plain
from ui.model_card import render_model_card

HIGHLIGHT = "#2f6db5"
MUTED = "#c5cbd3"
HOP = 512  # spectrogram hop (samples at 22,050 Hz)
MEL_COLUMNS = 2000  # spectrogram columns computed at most (the chart shows fewer)
EXAMPLE_CLIPS = 4  # example buttons on the Predict page (one test clip per class, spread over the classes)
DATASET_SOURCE = "Dataset clip"  # the "Audio" radio's option that the example buttons switch to


# ---- runs -------------------------------------------------------------------------------


def finished_runs(store) -> list:
    """Finished runs (newest first): the ones with a saved model to predict with."""
    return store.list_runs(status="finished")


def _metric(record, split: str, key: str) -> float | None:
    return ((record.metrics or {}).get(split) or {}).get(key)


def run_option(record) -> str:
    """Selectbox text of a run: 'name · test acc. 61.2% (balanced 55.0%)'."""
    acc = _metric(record, "test", "accuracy")
    bal = _metric(record, "test", "balanced_accuracy")
    text = f"{record.name} · test acc. {fmt_pct(acc)}"
    if bal is not None:
        text += f" (balanced {fmt_pct(bal)})"
    return text


def run_summary(record) -> str:
    """One line: architecture, features and scores of a run."""
    c = record.config
    frames = "all frames" if c.features.frames is None else f"first {c.features.frames} frames"
    parts = [
        f"`{record.id}`",
        f"{c.model.arch} LSTM, hidden {c.model.hidden_size} x {c.model.num_layers} layers",
        f"{c.features.representation} features ({frames})",
        f"val acc. {fmt_pct(_metric(record, 'validation', 'accuracy'))}",
        f"test acc. {fmt_pct(_metric(record, 'test', 'accuracy'))}",
        f"test balanced acc. {fmt_pct(_metric(record, 'test', 'balanced_accuracy'))}",
    ]
    return " · ".join(parts)


@st.cache_resource(max_entries=8, show_spinner="Loading the model…")
def load_predictor(db_path: str, run_id: str, _store):
    """engine.predict.predictor.Predictor of `run_id` (one per server and run; db_path keys the store)."""
    from engine.predict.predictor import Predictor

    return Predictor.from_store(_store, run_id)


@st.cache_resource(max_entries=4, show_spinner="Loading the seeds…")
def load_ensemble(db_path: str, run_ids: tuple[str, ...], _store):
    """engine.predict.ensemble.EnsemblePredictor of `run_ids` (one seed group; cached as load_predictor)."""
    from engine.predict.ensemble import EnsemblePredictor

    return EnsemblePredictor.from_store(_store, run_ids)


def seed_group(store, run_id: str) -> list[str]:
    """The finished runs of `run_id`'s configuration with any seed, `run_id` first (engine.predict.ensemble)."""
    from engine.predict.ensemble import seed_group as group_of

    return group_of(store, run_id)


ENSEMBLE_HELP = ("Each seed of one configuration is a separately trained network. Averaging their calibrated "
                 "probabilities (a deep ensemble, Lakshminarayanan et al. 2017) is usually more accurate and better "
                 "calibrated on audio unlike the training data than any one seed; it costs one forward pass per "
                 "seed. docs/TRUST.md has what it measured on the demo.")


def ensemble_label(name: str, size: int) -> str:
    """How the ensemble is named in the multi-model panel."""
    return f"{name} (mean of {size} seeds)"


# ---- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipInput:
    """One clip to classify: display name, the file's bytes, its MIME type, and the true
    class name when it comes from the dataset."""

    name: str
    data: bytes
    mime: str = "audio/wav"
    true_label: str | None = None
    digest: str = ""


def clip_input(name: str, data: bytes, mime: str | None = None, true_label: str | None = None) -> ClipInput:
    """A ClipInput with its content hash (sha256 of the bytes, 16 hex digits)."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    return ClipInput(name or "unnamed file", data, mime or "audio/wav", true_label, digest)


def dataset_clip_picker(data: str) -> ClipInput | None:
    """Split + class + clip selectboxes over the dataset in use; the chosen clip, or None."""
    from ui.common import dataset_ready, describe_data, load_dataset_cached

    if not dataset_ready(data):
        st.info(f"The dataset in use ({describe_data(data)}) has not been made yet: "
                "make it on the home page, or upload a file instead.")
        return None
    try:
        ds = load_dataset_cached(data)
    except EngineError as exc:
        st.error(f"Cannot read the dataset: {plain(exc)}")
        return None
    a, b, c = st.columns([1, 1, 2])
    subset = a.selectbox("Split", SUBSETS, index=SUBSETS.index("test"), key="predict_split")
    names = ds.class_names
    if st.session_state.get("predict_class", 0) >= len(names):  # another dataset's class chosen before
        st.session_state["predict_class"] = 0
    label = b.selectbox("Class", range(len(names)), format_func=lambda i: names[i], key="predict_class")
    clips = [clip for clip in ds.subset(subset) if clip.label == label]
    if not clips:
        st.info(f"The {subset} split has no {names[label]} clips.")
        return None
    by_uuid = {cl.uuid: cl for cl in clips}  # options by uuid: an example button can choose one (example_buttons)
    clip = by_uuid[c.selectbox(
        f"Clip ({len(clips)} in this split and class)", list(by_uuid), key="predict_clip",
        format_func=lambda u: _clip_option(by_uuid[u]),
    )]
    try:
        raw = clip.path.read_bytes()
    except OSError as exc:
        st.error(f"Cannot read {plain(clip.path.name)}: {plain(exc)}")
        return None
    st.caption(f"True label: **{names[clip.label]}** · file {plain(clip.path.name)}")
    mime = {".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}.get(clip.path.suffix.lower(), "audio/wav")
    return clip_input(clip.path.name, raw, mime, names[clip.label])


def _clip_option(clip) -> str:
    """A clip as the clip box lists it: Medley-solos-DB's uuid prefix and song; a clip of the
    user's own dataset by its path (and its group, when the CSV gave one)."""
    if not clip.group:
        return f"{clip.uuid[:8]} · song {clip.song_id if clip.song_id is not None else '?'}"
    return clip.uuid if clip.group == clip.uuid.split("#")[0] else f"{clip.uuid} · group {clip.group}"


def example_clips(ds, count: int = EXAMPLE_CLIPS) -> list:
    """Up to `count` test clips of different classes, spread over the class list (the first
    clip of each in CSV order), so that one click tries a clip no run trained on."""
    first: dict[int, Any] = {}
    for clip in ds.subset("test"):
        first.setdefault(clip.label, clip)
    labels = sorted(first)
    if not labels:
        return []
    step = max(1, len(labels) // count)
    return [first[label] for label in labels[::step][:count]]


def _choose_example(label: int, uuid: str) -> None:
    """Button callback: the dataset-clip path set to the test clip `uuid` of class `label`."""
    st.session_state.update(predict_source=DATASET_SOURCE, predict_split="test", predict_class=label,
                            predict_clip=uuid)


def example_buttons(data: str) -> None:
    """One button per example clip (example_clips), named by its true class; a click shows it
    through the "Dataset clip" path. Nothing when the dataset is not made or cannot be read
    (that path says why)."""
    from ui.common import dataset_ready, load_dataset_cached

    if not dataset_ready(data):
        return
    try:
        ds = load_dataset_cached(data)
        examples = example_clips(ds)
    except EngineError:
        return
    if not examples:
        return
    st.markdown("**Try an example** (a clip from the dataset's test split, which no model trained on):")
    for column, clip in zip(st.columns(len(examples)), examples):
        column.button(f"▶ {ds.class_names[clip.label]}", key=f"predict_example_{clip.label}",
                      width="stretch", on_click=_choose_example, args=(clip.label, clip.uuid),
                      help=f"Test clip {clip.uuid[:8]}, true label {ds.class_names[clip.label]}")


# ---- cached computation -----------------------------------------------------------------


@st.cache_data(max_entries=16, ttl=3600, show_spinner=False)  # decoded uploads can be tens of MB
def decode(digest: str, _data: bytes, _name: str) -> np.ndarray:
    """Mono float32 samples at 22,050 Hz of the file with hash `digest` (AudioError naming `_name` if unusable)."""
    return load_audio(bytes(_data), sr=MODEL_SAMPLE_RATE, max_bytes=MAX_UPLOAD_BYTES, name=_name)


@st.cache_data(max_entries=512, show_spinner=False)
def predict(model_key: str, digest: str, _predictor, _y: np.ndarray) -> dict:
    """Prediction.to_dict() of the model `model_key` (a run id, or the '+'-joined ids of an ensemble) on the clip
    with hash `digest`: label, probabilities,
    windows (start, duration, probabilities), duration, silent."""
    return _predictor.predict_samples(_y).to_dict()


@st.cache_data(max_entries=32, show_spinner=False)
def mel_db(digest: str, _y: np.ndarray) -> np.ndarray:
    """Mel spectrogram in dB (128 bands, as on the Dataset page; columns of
    charts.mel_step(len(y), HOP, MEL_COLUMNS) frames of 512 samples) of the clip `digest`;
    bounded memory for any length."""
    return charts.mel_db(_y, MODEL_SAMPLE_RATE, n_mels=128, hop_length=HOP, max_frames=MEL_COLUMNS)


# ---- charts -----------------------------------------------------------------------------


def probability_chart(probabilities: dict[str, float], predicted: str, true_label: str | None = None) -> alt.Chart:
    """Horizontal bars, one per class in the dataset's order, labelled with the short names
    every chart uses; the predicted class highlighted, the true class (if known) marked with a ◀.
    `probabilities`, `predicted`, `true_label`: full class names."""
    names = list(probabilities)
    df = pd.DataFrame({
        "class": [short_name(n) for n in names],
        "probability": [float(probabilities[n]) for n in names],
        "predicted": ["predicted" if n == predicted else "other" for n in names],
        "mark": [("◀ true" if n == true_label else "") for n in names],
    })
    df["text"] = df["probability"].map(lambda p: f"{100 * p:.1f}%") + " " + df["mark"]
    base = alt.Chart(df).encode(y=alt.Y("class:N", sort=list(df["class"]), title=None,
                                        axis=alt.Axis(labelOverlap=False, labelLimit=220)))
    bars = base.mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="probability"),
        color=alt.Color("predicted:N", scale=alt.Scale(domain=["predicted", "other"], range=[HIGHLIGHT, MUTED]),
                        legend=None),
        tooltip=["class:N", alt.Tooltip("probability:Q", format=".1%")],
    )
    text = base.mark_text(align="left", dx=3).encode(x="probability:Q", text="text:N")
    return (bars + text).properties(height=28 * len(names) + 30)


def window_frame(windows: Sequence[dict], class_names: Sequence[str]) -> pd.DataFrame:
    """Long table of a windowed prediction: window, start, end, class, probability, top."""
    rows = []
    for i, w in enumerate(windows):
        probs = list(w["probabilities"])
        top = int(np.argmax(probs))
        for k, name in enumerate(class_names):
            rows.append({"window": i + 1, "start": float(w["start"]), "end": float(w["start"]) + float(w["duration"]),
                         "class": name, "probability": float(probs[k]), "top": k == top})
    return pd.DataFrame(rows)


def window_chart(windows: Sequence[dict], class_names: Sequence[str]) -> alt.Chart:
    """Heat strip: x = time (each 3-second window), y = class, colour = probability; the
    window's most probable class outlined."""
    df = window_frame(windows, class_names)
    base = alt.Chart(df).encode(
        x=alt.X("start:Q", title="seconds"), x2="end:Q",
        y=alt.Y("class:N", sort=list(class_names), title=None, axis=alt.Axis(labelOverlap=False, labelLimit=220)),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("probability:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="probability"),
        tooltip=["window:Q", alt.Tooltip("start:Q", format=".1f"), alt.Tooltip("end:Q", format=".1f"),
                 "class:N", alt.Tooltip("probability:Q", format=".1%")],
    )
    top = base.transform_filter(alt.datum.top).mark_rect(filled=False, stroke="#d62728", strokeWidth=2)
    return (heat + top).properties(height=28 * len(class_names) + 40)


# ---- one clip ---------------------------------------------------------------------------


def _guarded(row: dict[str, Any], name: str, step: Callable[[], Any], unusable: str, stage: str) -> Any:
    """step() for the clip `name`; None when it raised, with the problem written to row["problem"]
    and shown named by the file: an AudioError (no usable signal: silent, too short, absurd
    levels, not audio) says the clip `unusable`; anything else (a broken model or decoder)
    says that `stage` failed, and the page goes on with the other clips."""
    try:
        return step()
    except AudioError as exc:
        row["problem"] = str(exc)
        st.error(f"**{plain(name)}** {unusable}: {plain(exc)}")
    except Exception as exc:
        row["problem"] = f"{stage} failed: {type(exc).__name__}: {exc}"
        st.error(f"**{plain(name)}**: {plain(row['problem'])}")
    return None


def render_clip(clip: ClipInput, model_key: str, predictor, record=None) -> dict[str, Any]:
    """A bordered panel for one clip, answered by `predictor` (a run, or its seeds' ensemble; `model_key`
    keys the cached prediction): player, prediction, the model card of run `record` (when
    given; ui.model_card), probabilities, waveform, spectrogram and (clips longer than one
    window) the window-by-window view.
    Returns a summary row: file, predicted, confidence, true label, problem."""
    row: dict[str, Any] = {"file": clip.name, "predicted": None, "confidence": None, "problem": None}
    if clip.true_label is not None:
        row["true label"] = clip.true_label
    with st.container(border=True):
        st.markdown(f"#### {plain(clip.name)}")
        y = _guarded(row, clip.name, lambda: decode(clip.digest, clip.data, clip.name), "cannot be used", "decoding")
        if y is None:
            return row
        seconds = len(y) / MODEL_SAMPLE_RATE
        pred = _guarded(row, clip.name, lambda: predict(model_key, clip.digest, predictor, y), "cannot be classified",
                        "prediction")
        if pred is None:
            return row
        probs = pred["probabilities"]
        label = pred["label"]
        row.update(predicted=label, confidence=float(probs[label]))

        left, right = st.columns([2, 3])
        with left:
            st.audio(clip.data, format=clip.mime)
            st.metric("Predicted instrument", label, f"{100 * probs[label]:.1f}% probability", delta_color="off",
                      delta_arrow="off")
            if clip.true_label is not None:
                if clip.true_label == label:
                    st.success(f"Correct: the true label is **{clip.true_label}**.")
                else:
                    st.error(f"Wrong: the true label is **{clip.true_label}** "
                             f"({100 * probs.get(clip.true_label, 0.0):.1f}% probability).")
            windows = pred["windows"]
            note = f"{seconds:.2f} s of audio at {MODEL_SAMPLE_RATE:,} Hz, {len(windows)} window(s) of 3 s"
            st.caption(note)
            for warning in pred.get("warnings", []):  # the same words the CLI prints
                st.warning(warning)
            if record is not None:
                render_model_card(record, list(probs), pred.get("ensemble"), pred.get("calibration"))
        with right:
            st.markdown("**Probability of each class**")
            st.altair_chart(probability_chart(probs, label, clip.true_label), width="stretch")
            render_trust(pred)
        row["unlike training"] = (pred.get("ood") or {}).get("unlike_training")

        wave, spec = st.columns(2)
        with wave:
            st.markdown("**Waveform**")
            st.altair_chart(charts.waveform_chart(y, MODEL_SAMPLE_RATE), width="stretch")
        with spec:
            st.markdown("**Mel spectrogram (dB)**")
            step = charts.mel_step(len(y), HOP, MEL_COLUMNS)
            st.altair_chart(charts.matrix_heatmap(mel_db(clip.digest, y), frame_seconds=HOP * step / MODEL_SAMPLE_RATE,
                                                  row_title="mel band", color_title="dB"),
                            width="stretch")

        if len(windows) > 1:
            names = list(probs)
            tops = [names[int(np.argmax(w["probabilities"]))] for w in windows]
            agree = sum(t == label for t in tops)
            st.markdown(f"**Window by window** ({len(windows)} windows of 3 s; the overall answer is the mean "
                        f"of their probabilities)")
            st.altair_chart(window_chart(windows, [short_name(n) for n in names]), width="stretch")
            covered = float(windows[-1]["start"]) + float(windows[-1]["duration"])
            rest = f" The last {seconds - covered:.1f} s (under half a window) is not classified." \
                if seconds - covered > 0.05 else ""
            st.caption(f"Overall answer: **{label}** ({100 * probs[label]:.1f}%). "
                       f"{agree} of {len(windows)} windows pick it on their own; outlined: each window's top class."
                       + rest)
            flagged = flagged_windows_note(windows)
            if flagged:
                st.warning(flagged)
    return row


def render_trust(pred: dict) -> None:
    """How the probabilities were made (calibrated or not) and the OOD check, in words (issue #24).
    The warning itself (engine.learn.trust.UNLIKE_TRAINING) is among the prediction's warnings."""
    st.caption(f"Probabilities {pred.get('calibration') or UNCALIBRATED}.")
    ensemble = pred.get("ensemble")
    if ensemble:
        st.caption(ensemble_sentence(ensemble))
    ood = pred.get("ood") or {}
    if ood.get("unlike_training") is None:
        st.caption(ood.get("note") or NO_OOD_CHECK)
        return
    verdict = "unlike" if ood["unlike_training"] else "like"
    against = (f"the ensemble's threshold {ood['threshold']:.3f} (how it is fixed: above)" if ensemble else
               f"the run's threshold {ood['threshold']:.3f} ({ACCEPT_RATE:.0%} of its validation clips score at or below it)")
    st.caption(f"Out-of-distribution check ({ood['method']}): score {ood['score']:.3f} against {against}"
               + f": {verdict} the training recordings.")


def ensemble_sentence(ensemble: dict) -> str:
    """'3 of 3 seeds agree (seed 0: piano 61%, ...)' for a Prediction's ensemble record."""
    members = ensemble["members"]
    each = ", ".join(f"seed {m['seed']}: {m['label']} {100 * m['probability']:.0f}%" for m in members)
    return f"{ensemble['agree']} of {len(members)} seeds give this answer on their own ({each})."


def flagged_windows_note(windows: Sequence[dict]) -> str | None:
    """Which 3-second windows the OOD check flags, in words; None when none (or no check)."""
    flagged = [w for w in windows if w.get("unlike_training")]
    if not flagged:
        return None
    spans = ", ".join(f"{_clock(w['start'])}-{_clock(w['start'] + w['duration'])}" for w in flagged)
    return (f"{len(flagged)} of {len(windows)} windows are unlike the recordings this model was trained on "
            f"({spans}); treat their answers with caution.")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def predict_with_runs(clip: ClipInput, run_ids: Sequence[str], store, names: dict[str, str],
                      lead: tuple[str, str, Any] | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """Each run's Prediction.to_dict() on `clip`, keyed by a unique display label, and the runs
    that could not answer (label -> message). The clip must decode (render_clip checked it).
    `lead` = (label, cache key, predictor): a model that is not one run (the seeds' ensemble)
    answering first."""
    y = decode(clip.digest, clip.data, clip.name)
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    if lead is not None:
        label, key, predictor = lead
        try:
            results[label] = predict(key, clip.digest, predictor, y)
        except Exception as exc:  # as below: the other models still answer
            failures[label] = f"cannot predict: {exc}"
    for rid in run_ids:
        label = names.get(rid, rid)
        label = label if list(names.values()).count(label) == 1 else f"{label} [{rid}]"
        try:
            results[label] = predict(rid, clip.digest, load_predictor(str(store.db_path), rid, store), y)
        except Exception as exc:  # one broken model must not hide the others' answers
            failures[label] = f"cannot predict: {exc}"
    return results, failures


def summary_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """The per-file summary table: confidence as text ('14.6%'), and '–' / '' instead of
    None where a file has no prediction or no problem (a table never says "None")."""
    df = pd.DataFrame(list(rows))
    if "confidence" in df:
        df["confidence"] = [("–" if c is None or pd.isna(c) else f"{100 * float(c):.1f}%") for c in df["confidence"]]
    if "unlike training" in df:  # the OOD verdict (issue #24): None = no check for this run, or no prediction
        df["unlike training"] = [{True: "yes", False: "no"}.get(v, "–") for v in df["unlike training"]]
    for column, blank in (("predicted", "–"), ("problem", ""), ("true label", "")):
        if column in df:
            df[column] = [blank if v is None or v != v else v for v in df[column]]  # v != v: NaN
    return df
