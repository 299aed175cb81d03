"""The Train page's view of one run: its name, tags, notes and delete; live progress while it
trains; then its results (one headline figure, the rest in a table, curves, per-class accuracy,
confusion matrices, calibration and the out-of-distribution check: ui.trust_view).

- run_picker(run_id, recent, labels, train_another)  the Run selectbox (+ "Train another run")
- manage(store, record)               rename, tag, write notes on or delete the run
- live(store, record, color)          progress line and live charts (one cheap timer), while active
- results(store, record, color)       the finished (or stopped) run's status, headline, table and charts
- headline(metrics) -> (split, label, value)  the figure the protocol chooses on
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.data.dataset import PROGRAM_VIEW_MISSING
from engine.core.errors import EngineError
from engine.core.space import format_bytes
from engine.runs.jobs import RESUMABLE_STATUSES
from engine.core.labels import short_names_of
from engine.learn.metrics import lacks_program_view
from engine.compare.ablation import PROTOCOL_FALLBACK, PROTOCOL_SPLIT
from engine.runs.store import ACTIVE
from ui import charts, defaults, downloads, trust_view
from ui import live as live_lines
from ui import common
from ui.common import fmt_pct, get_store, job_progress, plain
from ui.compare import history_frame

PAGES = Path(__file__).resolve().parent.parent / "pages"

# One timer, cheap: every LIVE_EVERY_S (the sidebar's pace too, so both show the same stage) the
# progress line reads the job manager's memory (one status query) and the charts ask the store
# whether an epoch was added; they are rebuilt only then, from the new records alone
# (ui.live.LiveCharts), so a run of a few seconds still shows its curves from the first epoch.
# Each timer rerun costs the server ~0.1-0.2 s of CPU here (docs/PERFORMANCE.md).
LIVE_EVERY_S = live_lines.PROGRESS_EVERY_S

SPLIT_HELP = {"validation_shift": "The validation clips played through a held-out recording chain (band-limited "
                                  "microphone, compressor, room, MP3 codec) that training never uses: how well "
                                  "the model carries over to another recording channel. A diagnostic: "
                                  "configurations are chosen on the source view below.",
              "validation_source": "The validation clips with their sound source changed in a way training "
                                   "never sees (the spectral envelope moved by 2-4 semitones with the pitch kept, "
                                   "the pitch by up to 2 semitones with the envelope kept), then played through "
                                   "the same held-out recording chain: a new instrument heard through a new "
                                   "channel. The recommended preset is chosen on this when the dataset has no "
                                   "program view (the real Medley-solos-DB), never on test (docs/PROTOCOL.md).",
              "validation_program": "Demo only: new songs played by a General MIDI program that no training or "
                                    "validation song plays (one held-out sibling per class: overdrive guitar, "
                                    "recorder, honky-tonk piano, baritone sax, muted trumpet, fiddle), rendered "
                                    "from the training soundfont through the normal recording chain. 6 of 8 "
                                    "classes: clarinet and singer have no program to hold out. The recommended "
                                    "preset is chosen on this when the dataset has it, never on test "
                                    "(docs/PROTOCOL.md)."}
PROGRAM_VIEW_LABEL = "Cross-collection validation (program, 6 of 8 classes)"
SPLITS = (("validation", "Validation"), ("validation_shift", "Cross-collection validation"),
          ("validation_source", "Cross-collection validation (source)"),
          ("validation_program", PROGRAM_VIEW_LABEL), ("test", "Test"))


RUN_KEY = "run"  # the Run selectbox's key and its URL parameter (?run=...)
_NEXT_KEY = "_run_next"


def select_run(run_id: str | None) -> None:
    """Show run `run_id` (None: none) from the next script run on (call st.rerun() after it).
    The Run selectbox is bound to the URL, and a widget's value can only be set before the
    widget is drawn, so the choice waits in the session until current_run() applies it."""
    st.session_state[_NEXT_KEY] = run_id


def current_run(labels: dict[str, str]) -> str | None:
    """The run to show: one chosen by select_run(), else the Run selectbox's value, else the
    URL's ?run= (a link or a reload; `labels`: run id -> the selectbox's text, which the URL
    holds; an id, or text naming no run, is returned as it is). Call before the selectbox."""
    if _NEXT_KEY in st.session_state:
        st.session_state[RUN_KEY] = st.session_state.pop(_NEXT_KEY)
        return st.session_state[RUN_KEY]
    if st.session_state.get(RUN_KEY):
        return st.session_state[RUN_KEY]
    found = common.runs_in_url(RUN_KEY, labels)
    if found is None:
        return None
    return found[0][0] if found[0] else found[1][0]


def run_picker(run_id: str | None, recent, labels: dict[str, str], train_another: bool = False) -> str | None:
    """The Run selectbox (recent runs, plus `run_id` when it is older), bound to the URL's ?run=
    so that choosing a run replaces the URL instead of adding a history entry (Back leaves the
    page rather than stepping through every run looked at); returns the chosen id or None.
    `train_another`: beside it a "Train another run" button, which clears the choice (the page
    then shows the form again)."""
    if train_another:
        pick, again = st.columns([4, 1], vertical_alignment="bottom")
        again.button("Train another run", icon=":material/add:", on_click=select_run, args=(None,),
                     help="Back to the configuration form (it keeps the values you set).")
    else:
        pick = st.container()
    ids = [r.id for r in recent]
    if run_id and run_id not in ids:
        ids.insert(0, run_id)
    # set only what the binding cannot read from the URL itself: a value set here reaches the
    # URL as a new history entry
    if st.session_state.get(RUN_KEY) != run_id and st.query_params.get(RUN_KEY) != labels.get(run_id, run_id):
        st.session_state[RUN_KEY] = run_id
    return pick.selectbox("Run", ids, key=RUN_KEY, bind="query-params", index=None, disabled=not ids,
                          format_func=lambda i: labels.get(i, i), placeholder="choose a run" if ids else "no runs yet")


def manage(store, record) -> None:
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
                freed = store.delete(record.id)
            except EngineError as exc:
                st.error(f"Cannot delete: {plain(exc)}")
                return
            select_run(None)
            st.session_state["train_flash"] = f"Deleted run {plain(record.name)}: {format_bytes(freed)} freed."
            st.rerun()


def _progress_of(run_id: str) -> dict:
    try:
        return next((p for p in job_progress() if p.get("run_id") == run_id), {})
    except Exception:  # job manager unavailable: fall back on the store alone
        return {}


def live(store, record, color: str) -> None:
    """The progress line (with Cancel) and the live loss/accuracy charts of an active run, on one timer."""
    common.mark_full_run("live")
    _live(record.id, record.config.train.epochs, color)


@st.fragment(run_every=LIVE_EVERY_S)
def _live(run_id: str, epochs: int, color: str) -> None:
    store = get_store()
    status = store.status(run_id)
    full = common.in_full_run("live")  # in a full run the page is already being drawn: see in_full_run
    if status not in ACTIVE and not full:
        st.rerun()  # the whole page, which now shows the results (with every epoch's curves)
    p = _progress_of(run_id)  # trained by this server: its live line; else (another process) the store's count
    fraction, text = (p["fraction"], p["message"]) if p else live_lines.progress_line(
        {}, status, store.epochs_done(run_id), epochs)
    bar, cancel = st.columns([6, 1], vertical_alignment="bottom")
    bar.progress(fraction, text=text)
    if cancel.button("Cancel run", key="cancel_current"):
        common.get_manager().cancel(run_id)
        common.forget_progress_snapshot()
        st.rerun(scope="fragment")
    cache = st.session_state.setdefault("_live_charts", live_lines.LiveCharts())
    specs = cache.update(store, run_id, color=color)
    if specs["steps"] is None and specs["accuracy"] is None:
        st.caption("The charts appear when the first epoch ends (the features are prepared first, once per "
                   "feature setting; later runs reuse them).")
        return
    a, b = st.columns(2)
    if specs["steps"] is not None:
        a.vega_lite_chart(specs["steps"], width="stretch")
    if specs["accuracy"] is not None:
        b.vega_lite_chart(specs["accuracy"], width="stretch")


def headline(metrics: dict) -> tuple[str, str, float] | None:
    """(split, its name, value) of the figure the protocol chooses on (docs/PROTOCOL.md):
    the headline metric (ui.defaults) on the program view where the run has it, else on the
    source view (engine.compare.ablation.protocol_split's choice, for one run), else (a run
    without cross-collection views) on validation. None when the run has none of them."""
    names = dict(SPLITS)
    for split in (PROTOCOL_SPLIT, PROTOCOL_FALLBACK, "validation"):
        value = (metrics.get(split) or {}).get(defaults.HEADLINE_METRIC)
        if value is not None:
            return split, names[split], float(value)
    return None


def metrics_frame(metrics: dict) -> pd.DataFrame:
    """The run's figures per split, one row each (split, clips, accuracy, balanced accuracy,
    macro-F1; rates in [0, 1]), in SPLITS order; splits the run lacks are left out."""
    rows = [{"split": label, "clips": int(m.get("n") or 0), "accuracy": m.get("accuracy"),
             "balanced accuracy": m.get("balanced_accuracy"), "macro-F1": m.get("macro_f1")}
            for split, label in SPLITS if (m := metrics.get(split))]
    frame = pd.DataFrame(rows, columns=["split", "clips", "accuracy", "balanced accuracy", "macro-F1"])
    return frame.astype({"accuracy": float, "balanced accuracy": float, "macro-F1": float})


def results(store, record, color: str) -> None:
    """A run that is no longer active: status, resume/restart, the headline figure, every
    figure in a table, curves, per class, configuration."""
    _status(store, record)
    metrics = record.metrics or {}
    top = headline(metrics)
    if top is not None:
        split, name, value = top
        st.metric(f"{defaults.HEADLINE_NAME.capitalize()} on {name.lower()}", fmt_pct(value),
                  help="The figure the protocol chooses configurations on (docs/PROTOCOL.md: validation chooses, "
                       "test reports). " + SPLIT_HELP.get(split, "The in-collection validation clips."))
        st.caption("Every figure of the run (balanced accuracy: the mean of the per-class recalls):")
        table = metrics_frame(metrics)
        st.dataframe(common.percent_style(table, ["accuracy", "balanced accuracy", "macro-F1"]), hide_index=True)
        if lacks_program_view(metrics):
            st.caption(f"**{PROGRAM_VIEW_LABEL}**: n/a, {PROGRAM_VIEW_MISSING}. The protocol chooses on the "
                       "source view instead.", help=SPLIT_HELP["validation_program"])
        with st.expander("What each split is"):
            for key, label in SPLITS:
                if key in SPLIT_HELP and metrics.get(key):
                    st.markdown(f"**{label}**: {SPLIT_HELP[key]}")
    if not metrics:
        st.info("No metrics: the run ended before its first epoch finished.")
    _curves(store, record, color)
    if metrics:
        _per_class(metrics, short_names_of(record))
    if record.status == "finished":  # issue #24: calibration (reliability diagram) and the OOD check
        trust_view.render(metrics)
    downloads.run_downloads(store, record)
    with st.expander("Configuration of this run"):
        st.code(json.dumps(record.config.to_dict(), indent=2), language="json")
    if record.status == "finished" and (PAGES / "4_Predict.py").exists():
        st.page_link("pages/4_Predict.py", label="Use this model on your own audio →")


def _status(store, record) -> None:
    epochs = record.epochs_done
    status_line = f"**{record.status}** after {epochs} epoch{'' if epochs == 1 else 's'}"
    spent = record.time_spent  # training apart from preparing the features (issue #30)
    if spent:
        status_line += f": {spent}"
    if record.device:
        status_line += f", on {record.device}"
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
    if record.status not in RESUMABLE_STATUSES:
        return
    again = st.columns([1, 1, 3])
    can_resume = store.has_checkpoint(record.id)
    if again[0].button(f"Resume from epoch {record.epochs_done}" if can_resume else "Resume (starts over: no checkpoint)",
                       help="Queue this run again; training continues from its last saved epoch."):
        common.get_manager().resume(record.id)
        st.rerun()
    if again[1].button("Start again as a new run", help="A new run with the same configuration."):
        select_run(common.get_manager().restart(record.id))
        st.rerun()


def _curves(store, record, color: str) -> None:
    hist = history_frame([record])
    if not len(hist):
        return
    st.markdown("**Training curves**")
    c = st.columns(3)
    log_scale = c[0].toggle("log-scale loss", value=defaults.LOG_SCALE_LOSS)
    smoothing = c[1].slider("smoothing", 0.0, 0.95, 0.0, 0.05)
    x = c[2].radio("x axis", ["epoch", "seconds"], horizontal=True)
    a, b = st.columns(2)
    own = {record.name: color}
    a.altair_chart(charts.loss_curves(hist, x=x, log_scale=log_scale, smoothing=smoothing, colors=own), width="stretch")
    b.altair_chart(charts.accuracy_curves(hist, x=x, smoothing=smoothing, colors=own, columns={
        **charts.VALIDATION_CURVES, "train_accuracy": "train accuracy",
        "val_balanced_accuracy": "validation balanced acc."}), width="stretch")
    steps = store.step_losses(record.id)
    if steps:
        spe = max(1, len(steps) // max(1, record.epochs_done))
        st.altair_chart(charts.step_loss_chart(steps, steps_per_epoch=spe, log_scale=log_scale, color=color),
                        width="stretch")


def _per_class(metrics: dict, names: list[str]) -> None:
    st.markdown("**Per class**")
    rows = [{"class": name, "split": split, "accuracy": acc}
            for split in ("validation", "test") if metrics.get(split)
            for name, acc in zip(names, metrics[split]["per_class_accuracy"])]
    st.altair_chart(charts.per_class_bars(pd.DataFrame(rows), group="split", y_title="accuracy (recall)"),
                    width="stretch")
    normalize = st.toggle("row-normalised confusion matrices", value=defaults.NORMALISE_CONFUSION)
    cols = st.columns(2)
    for col, split in zip(cols, ("validation", "test")):
        if metrics.get(split):
            col.altair_chart(charts.confusion_heatmap(metrics[split]["confusion"], names, normalize=normalize,
                                                      title=split), width="stretch")
