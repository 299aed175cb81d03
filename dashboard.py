"""Home: the dataset in use, the compute device, the runs so far, and a one-click start.

Run with `streamlit run dashboard.py` (optionally `-- --data /path/to/medley_solos_db`).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.core.errors import EngineError
from engine.core.labels import SUBSETS
from engine.core.space import format_bytes, free_bytes
from engine.compare.ablation import select_by_cross_validation, summarize_rows
from engine.runs.launch import plan_ablation, queue_ablation
from engine.learn.presets import ROBUSTNESS_OPTIONS, ROBUSTNESS_SEEDS, ablation_row
from ui import defaults, home
from ui.home import getting_started
from ui.common import (
    compute_device, data_setting, dataset_ready, describe_data, get_manager, get_store, plain,
    load_dataset_cached, percent_style, render_sidebar, set_data_setting,
)
from ui.common import backend_setting, backend_summary, set_backend

st.set_page_config(page_title="Medley LSTM lab", page_icon="🎻", layout="wide")


render_sidebar()

st.title("Medley-solos-DB LSTM lab")
st.write(
    "Train, compare and use small LSTM classifiers of 8 solo instruments, starting from a student "
    "study's configuration. The pages, in the sidebar: Dataset (what is in the data), Train (one run, "
    "live), Compare (runs side by side, with statistics), Predict (classify your own audio)."
)

data = data_setting()
store = get_store()
runs = store.list_runs()

# ---- getting started: first on the page until a run exists -------------------------------
def start_section() -> None:
    """The newcomer's steps with links to the pages, 'Make demo data', and the ablation buttons,
    each saying how many runs it queues and roughly how long they take here."""
    done = (dataset_ready(data), bool(runs), any(r.status == "finished" for r in runs))
    st.subheader("Getting started" if not all(done) else "The study's ablation")
    if not all(done):
        st.markdown(getting_started(*done))
        for column, (page, label) in zip(st.columns(len(home.GETTING_STARTED_LINKS)), home.GETTING_STARTED_LINKS):
            with column:
                st.page_link(page, label=label, icon=":material/arrow_forward:")
    if not dataset_ready(data) and st.button("Make demo data", type="primary"):
        try:
            load_dataset_cached(data)
        except EngineError as exc:
            st.error(f"Could not make the demo data: {plain(exc)}")
        else:
            st.rerun()

    c1, c2, c3, c4 = st.columns([1, 2, 2, 2], vertical_alignment="top")
    epochs = c1.number_input("epochs per run (the study: 50)", 1, 500, 50, key="ablation_epochs",
                             help="For the study's ablation and 'what the study missed'; the robustness "
                                  "ablation trains the recommended configuration's own number of epochs.")
    presets = {
        "study": (c2, "Run the study's ablation",
                  "Queues one run per ablation row (10 runs: base, batch 50/20, lr 1e-3/1e-5, dropout "
                  "0.05/0.5, SGD, Adadelta, 2+1 LSTM), tagged 'study'."),
        "beyond": (c3, "Run what the study missed",
                   "Queues 5 runs tagged 'beyond': the study's base, + standardised features, + the whole clip "
                   "read as a sequence, + class weighting, and our recommended configuration."),
        "robustness": (c4, "Run the robustness ablation",
                       f"Queues {(1 + len(ROBUSTNESS_OPTIONS)) * len(ROBUSTNESS_SEEDS)} runs tagged 'robustness': "
                       f"the recommended configuration and the same with one option flipped ("
                       f"{', '.join(ROBUSTNESS_OPTIONS)}), {len(ROBUSTNESS_SEEDS)} seeds each. The table below "
                       "compares validation, cross-collection validation and test."),
    }
    pace, measured = home.seconds_per_epoch(runs, data)
    for tag, (column, label, help_text) in presets.items():
        values = {} if tag == "robustness" else {"train.epochs": int(epochs)}  # robustness: the preset's epochs
        try:
            estimate = home.ablation_estimate(plan_ablation(tag, data=data, values=values), pace, measured)
        except EngineError:
            estimate = ""
        clicked = column.button(label, type="primary" if dataset_ready(data) else "secondary",
                                help=help_text, key=f"run_{tag}")
        if estimate:
            column.caption(estimate)
        if not clicked:
            continue
        if not dataset_ready(data):  # make the demo here, with progress, before the workers need it
            try:
                load_dataset_cached(data)
            except EngineError as exc:
                st.error(f"Could not make the demo data: {plain(exc)}")
                st.stop()
        ids = queue_ablation(get_manager(), tag, data=data, values=values, prefix=f"{tag}: ")
        st.session_state["home_flash"] = (f"Queued {len(ids)} runs tagged '{tag}'. Progress is in the sidebar; "
                                          "results on **Compare**.")
        st.rerun()
    if "home_flash" in st.session_state:
        st.success(st.session_state.pop("home_flash"))


if not runs:
    start_section()

# ---- dataset ----------------------------------------------------------------------------
st.subheader("Dataset")
left, right = st.columns([3, 2])
with left:
    st.markdown(f"In use: **{describe_data(data)}** · compute device: **{compute_device()}**")
    if dataset_ready(data):
        try:
            ds = load_dataset_cached(data)
        except EngineError as exc:
            st.error(f"Cannot read the dataset: {plain(exc)}")
        else:
            kind = ("demo (synthetic, rendered from General MIDI soundfonts)" if ds.is_demo else "Medley-solos-DB"
                    if ds.layout in ("mirdata", "flat") else f"your own dataset ({len(ds.class_names)} classes)")
            counts = pd.DataFrame(ds.counts()).reindex(columns=list(SUBSETS))
            counts.loc["total"] = counts.sum()
            st.caption(f"{kind} at {plain(ds.root)} ({ds.layout} layout), {len(ds.clips)} clips, "
                       f"{len(ds.problems)} problem(s) found.")
            # the class names are the index: wide enough for "distorted electric guitar", never cut
            st.dataframe(counts, width="stretch",
                         column_config={"_index": st.column_config.TextColumn("class", width="medium")})
    else:
        st.info("The built-in demo dataset has not been generated yet (see *Getting started*).")
with right:
    with st.form("switch_data"):
        value = st.text_input(
            "Dataset folder", value=data, placeholder="empty = default",
            help="A Medley-solos-DB folder (mirdata layout: annotation/ + audio/, or the CSV beside the "
                 "WAVs), your own labelled dataset (a folder with one folder per class, optionally under "
                 "training/ validation/ test/; or a CSV file with path,label[,split][,group] columns: "
                 "docs/GUIDE.md, *Your own dataset*), `demo`, `demo:tiny`, or empty for the default: "
                 "$MEDLEY_DATA, then ~/mir_datasets/medley_solos_db, else the built-in demo.",
        )
        if st.form_submit_button("Use this dataset"):
            problem = set_data_setting(value)
            if problem is None:
                st.rerun()
            st.error(f"Not switched: {plain(problem)}")
    st.caption("Also: `streamlit run dashboard.py -- --data /path/to/medley_solos_db`, "
               "or `MEDLEY_DATA=/path streamlit run dashboard.py`, or `?data=...` in the URL.")

# ---- where runs train ---------------------------------------------------------------------
summary = backend_summary()  # makes the job manager first: a failed Ray connect sets the problem
setting = backend_setting()
if setting["problem"]:
    st.warning(plain(setting["problem"]))
with st.expander(f"Where runs train: {plain(summary)}"):
    options = setting["options"]
    with st.form("backend"):
        on_ray = st.radio("Runs train", ["on this machine", "on a Ray cluster"], horizontal=True,
                          index=1 if get_manager().backend == "ray" else 0,
                          help="A Ray cluster trains several runs at once, one task each, on its nodes' CPUs and "
                               "GPUs (needs `pip install -r requirements-ray.txt`; see docs/GUIDE.md).") == "on a Ray cluster"
        b1, b2, b3 = st.columns([2, 1, 1])
        address = b1.text_input("Ray address", value=options.address if options else "local",
                                help="`local`: a Ray started inside this server; or host:port of a running head "
                                     "(`ray start --head` prints it).")
        cpus = b2.number_input("CPUs per run", 0.25, 64.0, float(options.cpus_per_run if options else 1.0), 0.25)
        gpus = b3.number_input("GPUs per run", 0.0, 8.0, float(options.gpus_per_run if options else 0.0), 0.25,
                               help="A fraction shares one GPU: 0.25 = four runs per GPU (Ray does not fence memory).")
        if st.form_submit_button("Apply"):
            with st.spinner("Connecting to Ray..." if on_ray else "Switching..."):
                problem = set_backend("ray" if on_ray else "local", address, cpus, gpus)
            if problem is None:
                st.rerun()
            st.error(f"Not switched: {plain(problem)}")

# ---- runs -------------------------------------------------------------------------------
st.subheader("Runs")
by_status = pd.Series([r.status for r in runs], dtype="object").value_counts()
cols = st.columns(4)
cols[0].metric("running", int(by_status.get("running", 0)))
cols[1].metric("queued", int(by_status.get("queued", 0)))
cols[2].metric("finished", int(by_status.get("finished", 0)))
cols[3].metric("failed / cancelled / other", len(runs) - int(by_status.reindex(["running", "queued", "finished"]).fillna(0).sum()))
st.caption(f"Run store: {format_bytes(store.total_bytes())} on disk (models, checkpoints, predictions); "
           f"{format_bytes(free_bytes(store.runs_dir))} free on its disk. Deleting a run frees its share.")

finished = [r for r in runs if r.status == "finished" and r.metrics.get("validation")]
if finished:
    def _m(r, split, key):
        return (r.metrics.get(split) or {}).get(key)

    table = home.best_runs_frame(finished)
    st.markdown(f"**Best finished runs** (by {defaults.RANK_DESCRIPTION}, the metric every page ranks by; "
                "balanced accuracy = mean per-class recall, beside it; test is shown as the final report, never "
                "used to choose)")
    st.dataframe(percent_style(table, home.RATE_COLUMNS), hide_index=True, width="stretch",
                 column_config={"run": st.column_config.TextColumn(width="large")})
    st.page_link("pages/3_Compare.py", label="Compare runs →")
elif not runs:
    st.caption("No runs yet.")

if runs:  # once a run exists, the first steps move below the runs
    start_section()

# ---- robustness ablation ----------------------------------------------------------------
robust = [r for r in runs if "robustness" in r.tags]
if robust:
    st.subheader("Robustness ablation")
    order: dict[str, list] = {}
    for r in sorted(robust, key=lambda r: r.created):
        order.setdefault(ablation_row(r.name), []).append(r)
    table = pd.DataFrame(summarize_rows(list(order.items())))
    shown = {"row": "configuration", "finished": "seeds done", "val_accuracy_mean": "val",
             "val_accuracy_std": "val ±", "val_shift_accuracy_mean": "cross-val", "val_shift_accuracy_std": "cross-val ±",
             "val_source_accuracy_mean": "cross-val source", "val_source_accuracy_std": "cross-val source ±",
             "val_program_accuracy_mean": "cross-val program", "val_program_accuracy_std": "cross-val program ±",
             "test_accuracy_mean": "test", "test_accuracy_std": "test ±", "gap_mean": "val-test gap"}
    st.caption("Mean and seed standard deviation over the finished runs of each row. *cross-val* = the "
               "validation clips through a held-out recording chain (a new channel); *cross-val source* = the "
               "same clips with their source changed too (formants and pitch moved); *cross-val program* = demo "
               "songs played by GM programs training never plays (6 of 8 classes; none on the real dataset). The "
               "protocol chooses on cross-val program when every run has it, else on cross-val source; never on "
               "test (docs/PROTOCOL.md).")
    rates = [label for key, label in shown.items() if key not in ("row", "finished")]
    st.dataframe(percent_style(table[list(shown)].rename(columns=shown), rates), hide_index=True, width="stretch")
    if "recommended" in order and all(int(n) >= 2 for n in table["finished"]):
        rows = [("recommended", order["recommended"]), *((k, v) for k, v in order.items() if k != "recommended")]
        try:
            selection = select_by_cross_validation(rows, lambda r: store.load_predictions(r.id))
            view = "cross-val program" if selection["split"] == "validation_program" else "cross-val source"
            st.caption(f"Protocol choice: **{selection['choice']}** (a row replaces *recommended* only when "
                       f"significantly better on {view}: seed-level test, Holm across the rows, alpha 0.05)."
                       + (f" Note: {selection['note']}." if selection.get("note") else ""))
        except EngineError as exc:
            st.caption(f"No protocol choice yet: {exc}")
