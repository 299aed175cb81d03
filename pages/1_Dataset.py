"""Dataset: what is in the data in use: clips per class and split, imbalance, audio checks,
problems found, example clips to listen to and look at, per-class feature distributions.
Medley-solos-DB, the demo, or a labelled dataset of the user's own (its classes, where its
split came from, and the classes with too few clips)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine.data.audio import load_audio
from engine.core.config import FeatureConfig
from engine.data.dataset import CUSTOM_LAYOUTS, PROGRAM_VIEW_MISSING, summarize
from engine.core.labels import SUBSETS, short_name
from ui import charts
from ui.common import data_setting, plain, render_sidebar, require_dataset

st.set_page_config(page_title="Dataset · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Dataset")

data = data_setting()
ds = require_dataset(data)
# The page's choices live in the URL (?ds_class=...): a reload or a shared link keeps them, and
# Streamlit replaces the history entry, so Back leaves the page instead of stepping through them.
BIND = "query-params"
FEATURE_NAMES = [f"MFCC {i}" for i in range(1, 14)] + ["centroid"] + [f"contrast {i}" for i in range(1, 8)]


@st.cache_data(show_spinner="Reading audio headers…")
def dataset_summary(fingerprint: str, _ds) -> dict:
    return summarize(_ds)


@st.cache_data(max_entries=64, show_spinner=False)
def clip_audio(path: str, start: float = 0.0, seconds: float | None = None) -> np.ndarray:
    return load_audio(path, offset=start, duration=seconds)  # mono float32, 22,050 Hz: the clip's window


@st.cache_data(max_entries=64, show_spinner=False)
def clip_pictures(path: str, start: float = 0.0, seconds: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(mel spectrogram in dB (128, frames), study features (21, frames) or None, error or None)."""
    y = clip_audio(path, start, seconds)
    mel = charts.mel_db(y, 22050)
    try:
        from engine.features.extract import clip_features

        feats = clip_features(y, FeatureConfig(frames=None)).T  # (features, frames)
        return mel, feats, None
    except Exception as exc:  # features module missing or failing: show the rest of the page
        return mel, None, str(exc)


@st.cache_data(show_spinner="Computing features of a sample of clips…")
def feature_sample(fingerprint: str, subset: str, per_class: int, _clips) -> pd.DataFrame:
    """Mean over the clip of each study feature, for up to `per_class` clips per class."""
    from engine.features.extract import clip_features

    rows = []
    rng = np.random.default_rng(0)
    for label, name in enumerate(SHORT):
        members = [c for c in _clips if c.label == label]
        for i in rng.permutation(len(members))[:per_class]:
            clip = members[i]
            feats = clip_features(clip_audio(str(clip.path), clip.start, clip.seconds), FeatureConfig(frames=None))
            row = dict(zip(FEATURE_NAMES, feats.mean(axis=0)[: len(FEATURE_NAMES)]))
            row["class"] = name
            rows.append(row)
    return pd.DataFrame(rows)


NAMES = ds.class_names  # the dataset's classes: Medley-solos-DB's eight, or the user's own
SHORT = [short_name(n) for n in NAMES]
CUSTOM = ds.layout in CUSTOM_LAYOUTS
summary = dataset_summary(ds.fingerprint(), ds)
kind = "built-in demo" if summary["is_demo"] else "your own dataset" if CUSTOM else "Medley-solos-DB"
where = plain(str(ds.csv_path)) if ds.layout == "csv" else plain(summary["root"])
st.caption(f"{kind} at {where} ({summary['layout']} layout, {len(NAMES)} classes"
           + (f": {plain(', '.join(NAMES[:12]))}{', ...' if len(NAMES) > 12 else ''})" if CUSTOM else ")"))
if CUSTOM:
    for note in summary["notes"]:
        st.info(plain(note[:1].upper() + note[1:] + "."))
    if not summary["split_file"]:
        st.caption("The splits come from the data itself (its training/ validation/ test/ folders or its CSV's "
                   "split column).")
if summary["warnings"]:
    st.warning("Some classes have too few clips to train or validate on:\n" +
               "\n".join(f"- {plain(w)}" for w in summary["warnings"]))

totals = summary["totals"]
cols = st.columns(5)
cols[0].metric("clips", sum(totals.values()))
for col, subset in zip(cols[1:4], SUBSETS):
    col.metric(subset, totals.get(subset, 0))
cols[4].metric("problems", len(summary["problems"]))
view = summary.get("program_view") or {}
if view:
    per_class = ", ".join(f"{short_name(name)} {n}" for name, n in sorted(view.items(), key=lambda kv: -kv[1]))
    st.caption(f"Also {sum(view.values())} clips of songs played by General MIDI programs that no training or "
               f"validation song plays ({per_class}): the *cross-val program* view, used to choose the "
               "recommended preset (docs/PROTOCOL.md). Not counted above. Its classes are uneven, so its "
               "accuracy leans on the largest; its balanced accuracy (Train page) weighs each class equally.")
elif not CUSTOM:
    st.caption(f"Cross-val program: {PROGRAM_VIEW_MISSING}; the cross-collection validations here are the "
               "channel and source views of the validation clips.")

# ---- counts and imbalance ---------------------------------------------------------------
st.subheader("Clips per class and split")
share = st.toggle("Show each split's share instead of counts", value=False, key="ds_share", bind=BIND)
st.altair_chart(charts.class_count_chart(summary["counts"], share=share), width="stretch")

rows = []
for subset in SUBSETS:
    per_class = summary["counts"][subset]
    present = {k: v for k, v in per_class.items() if v > 0}
    if not present:
        continue
    big, small = max(present, key=present.get), min(present, key=present.get)
    rows.append({"split": subset, "largest class": f"{big} ({present[big]})",
                 "smallest class": f"{small} ({present[small]})", "max / min": present[big] / present[small],
                 "missing classes": ", ".join(k for k, v in per_class.items() if v == 0)})
imbalance = pd.DataFrame(rows)
st.dataframe(imbalance, hide_index=True, width="stretch",
             column_config={"max / min": st.column_config.NumberColumn(format="%.1f×")})
worst = imbalance["max / min"].max() if len(imbalance) else 1.0
if worst >= 3:
    st.warning(f"Classes are imbalanced (up to {worst:.1f}× between the largest and smallest class of a split). "
               "Overall accuracy then mostly measures the big classes: read balanced accuracy too, and "
               "consider class weighting on the Train page.")
shares = pd.DataFrame(summary["class_share"]).reindex(columns=list(SUBSETS))
shift = (shares.get("test", 0) - shares.get("training", 0)).abs().max() if len(shares) else 0
if shift >= 0.1:
    st.info(f"The class mix changes between training and test (up to {shift:.0%} of a split for one class): "
            "a model tuned on validation may score quite differently on test.")

# ---- audio checks -----------------------------------------------------------------------
st.subheader("Durations, sample rates and problems")
c1, c2 = st.columns(2)
with c1:
    d = summary["durations"]
    if d.get("mean") is not None:
        st.write(f"Durations per file: min **{d['min']:.3f} s**, mean **{d['mean']:.3f} s**, max **{d['max']:.3f} s** "
                 + ("(a file longer than 2.972 s is cut into 2.972 s windows)" if CUSTOM else "(official clips: 2.972 s)"))
    rates = pd.DataFrame([{"sample rate (Hz)": k, "files": v} for k, v in summary["sample_rates"].items()])
    st.dataframe(rates, hide_index=True)
    if summary.get("channels"):
        st.caption("Channels: " + ", ".join(f"{'mono' if k == '1' else 'stereo' if k == '2' else k + ' channels'} "
                                            f"{v} file(s)" for k, v in sorted(summary["channels"].items()))
                   + " (every file is read as mono)")
with c2:
    if summary["problems"]:
        st.warning(f"{len(summary['problems'])} file(s), folder(s) or CSV row(s) skipped or read another way "
                   "(the rest of the dataset is used):")
        st.dataframe(pd.DataFrame(summary["problems"]), hide_index=True, width="stretch")
    else:
        st.success("No problems found: every CSV row has a readable clip of the expected length.")

# ---- examples ---------------------------------------------------------------------------
st.subheader("Listen and look")
c1, c2, c3 = st.columns(3)
label = c1.selectbox("class", range(len(NAMES)), format_func=lambda i: NAMES[i], key="ds_class", bind=BIND)
subset = c2.selectbox("split", SUBSETS, key="ds_split", bind=BIND)
members = [c for c in ds.subset(subset) if c.label == label]
if not members:
    st.info(f"No {NAMES[label]} clips in {subset}.")
else:
    n_examples = c3.number_input("examples", 1, min(4, len(members)), min(2, len(members)), key="ds_examples", bind=BIND)
    start = st.session_state.get("example_start", 0) % len(members)
    if st.button("Other examples"):
        start = st.session_state["example_start"] = (start + int(n_examples)) % len(members)
    for clip in (members[(start + i) % len(members)] for i in range(int(n_examples))):
        with st.container(border=True):
            origin = f"group {plain(clip.group)}" if CUSTOM else f"song {clip.song_id}"
            st.markdown(f"**{plain(NAMES[label])}** · {subset} · `{clip.uuid}` · {origin}")
            window = {} if clip.seconds is None else {"start_time": int(clip.start),
                                                      "end_time": int(clip.start + clip.seconds) + 1}
            st.audio(str(clip.path), **window)
            y = clip_audio(str(clip.path), clip.start, clip.seconds)
            mel, feats, error = clip_pictures(str(clip.path), clip.start, clip.seconds)
            a, b = st.columns(2)
            a.altair_chart(charts.waveform_chart(y, 22050), width="stretch")
            b.altair_chart(charts.matrix_heatmap(mel, frame_seconds=512 / 22050, row_title="mel band",
                                                 color_title="dB"), width="stretch")
            if feats is None:
                st.caption(f"Study features unavailable: {error}")
            else:
                rows_std = feats.std(axis=1, keepdims=True)
                z = (feats - feats.mean(axis=1, keepdims=True)) / np.where(rows_std > 0, rows_std, 1)
                st.altair_chart(charts.matrix_heatmap(z, frame_seconds=512 / 22050, row_labels=FEATURE_NAMES,
                                                      row_title=None, color_title="z-score", scheme="redblue"),
                                width="stretch")
                st.caption("The study's 21 features per frame (13 MFCC, spectral centroid, 7 spectral contrast), "
                           "each row scaled to zero mean and unit variance for display. The study's model saw "
                           "only the first 3 frames (the first 0.07 s).")

# ---- per-class feature distributions ----------------------------------------------------
st.subheader("Per-class feature distributions")
c1, c2 = st.columns(2)
dist_subset = c1.selectbox("split ", SUBSETS, key="dist_subset", bind=BIND)
per_class = c2.number_input("clips per class (sampled)", 2, 200, 20, key="dist_per_class", bind=BIND)
if st.toggle("Compute the distributions (reads and analyses the sampled clips)", key="dist_on", bind=BIND):
    try:
        sample = feature_sample(ds.fingerprint(), dist_subset, int(per_class), ds.subset(dist_subset))
    except Exception as exc:
        st.error(f"Could not compute features: {plain(exc)}")
    else:
        feature = st.selectbox("feature (mean over the clip)", FEATURE_NAMES, index=0, key="dist_feature", bind=BIND)
        a, b = st.columns(2)
        a.altair_chart(charts.feature_boxplot(sample, feature=feature, order=SHORT), width="stretch")
        b.altair_chart(charts.feature_boxplot(sample, feature="centroid", order=SHORT), width="stretch")
        st.caption(f"{len(sample)} clips of {dist_subset}. Classes whose boxes overlap little are easy to "
                   "separate from this feature alone.")
