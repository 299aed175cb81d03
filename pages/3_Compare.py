"""Compare: every run in one sortable table, runs side by side (curves, confusion matrices,
per-class accuracy, the parameters that differ), an honest significance test between two runs,
the clips behind a confusion cell, the validation-test gap and parameter-vs-metric views.
The selection lives in the URL (?runs=id1,id2) so a comparison can be shared."""

from __future__ import annotations

import html

import streamlit as st

from engine import presets, stats, verdicts
from engine.errors import EngineError
from engine.labels import SHORT_NAMES
from engine.store import STATUSES
from ui import charts
from ui import compare as cmp
from ui import significance as sig
from ui import flips as flips_view
from ui.colors import label_colors, run_colors, swatch
from ui.common import (csv_bytes, data_setting, dataset_ready, get_manager, get_store, load_dataset_cached, plain,
                       render_sidebar)

st.set_page_config(page_title="Compare · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Compare runs")

store = get_store()
runs = store.list_runs()
by_id = {run.id: run for run in runs}
labels = cmp.run_labels(runs)
colors = run_colors(store)  # run id -> its colour on every page


@st.fragment(run_every=5)
def refresh_on_change(seen: tuple) -> None:
    """Rerun the page when runs are added, deleted, queued or end (one small query every 5 s)."""
    if store.signature() != seen:
        st.rerun()


refresh_on_change(store.signature())
df = cmp.runs_frame(runs)
PCT = {c: st.column_config.NumberColumn(c, format="percent") for c in cmp.METRIC_COLUMNS}


@st.cache_data(max_entries=32, show_spinner=False)
def predictions(run_id: str, finished: float | None) -> dict:
    """A run's stored predictions ({} when it has none); `finished` invalidates the cache."""
    try:
        return get_store().load_predictions(run_id)
    except EngineError:
        return {}


@st.cache_data(max_entries=32, show_spinner="Testing the difference…")
def family(units: tuple, pairs: tuple, split: str) -> list[dict]:
    """engine.stats.compare_family over units ((label, ((run id, finished), ...)), ...): the same
    function `python -m engine compare` calls, Holm-corrected over `pairs`."""
    records = {label: [get_store().get(run_id) for run_id, _ in members] for label, members in units}
    stamps = {run_id: finished for _, members in units for run_id, finished in members}
    return stats.compare_family(records, list(pairs), lambda r: predictions(r.id, stamps[r.id]), split=split)


@st.cache_data(max_entries=32, show_spinner=False)
def accuracy_intervals(run_id: str, finished: float | None, split: str) -> dict:
    """Bootstrap intervals of one run's accuracy and balanced accuracy on `split`."""
    pred = predictions(run_id, finished)[split]
    return stats.bootstrap_accuracy(pred["y"], pred["probs"])


# ---- the runs table -------------------------------------------------------------------------
st.subheader("Runs")
if not runs:
    st.info("No runs yet. Train one on the **Train** page, or queue an ablation below.")
f1, f2, f3, f4 = st.columns([2, 1, 1.5, 2])
status_filter = f1.multiselect("Status", [s for s in STATUSES if s in set(df["status"])], key="cmp_status")
tag_filter = f2.selectbox("Tag", ["(any)", *cmp.all_tags(df)], key="cmp_tag")
param_filter = f3.selectbox("Parameter", ["(none)", *cmp.param_names()], key="cmp_param")
value_filter = f4.multiselect("Values", cmp.param_values(df, param_filter) if param_filter != "(none)" else [],
                              key="cmp_values")
shown = cmp.filter_runs(df, status_filter, None if tag_filter == "(any)" else tag_filter,
                        None if param_filter == "(none)" else param_filter, value_filter)
sort_by = st.selectbox("Sort by", cmp.SORT_COLUMNS, key="cmp_sort",
                       help="Validation chooses, test reports: sorting by a test column picks on the test split.")
if cmp.is_test_metric(sort_by):
    st.caption(verdicts.TEST_SPLIT_NOTE)
shown = cmp.sort_runs(shown, sort_by)
st.caption(f"{len(shown)} of {len(df)} runs, best {sort_by} first (or click a column header). Rates are on the "
           "validation or test split; *val-test gap* = validation minus test accuracy; *cross-val acc* = accuracy "
           "on the validation clips played through a held-out recording chain (a new channel); *cross-val source "
           "acc* = the same clips with their source changed too (formants and pitch moved, then that chain), the "
           "signal used to choose configurations (docs/PROTOCOL.md).")
st.dataframe(shown[cmp.table_columns(shown)], hide_index=True, width="stretch", column_config=PCT)
st.download_button("Download this table (CSV)", csv_bytes(shown), "runs.csv", "text/csv")

study_rows = cmp.study_frame([by_id[i] for i in shown["id"]], labels, presets.STUDY_REPORTED,
                             presets.STUDY_ABLATION_CHANGES, presets.STUDY_BASE,
                             presets.STUDY_FINAL_ROW, presets.STUDY_REPORTED_FINAL_TEST)
if len(study_rows):
    st.markdown("**Our study runs beside the study's reported numbers** (the study reported validation "
                "accuracy; only its final model, batch 50, was evaluated on test)")
    st.dataframe(study_rows, hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(c, format="percent") for c in study_rows.columns if "acc" in c})

# ---- selection (kept in the URL) --------------------------------------------------------------
url = st.query_params.get("runs", "")
if url and st.session_state.get("_cmp_url") != url:  # a shared link, or the first load
    ids, missing = cmp.parse_run_ids(url, by_id)
    st.session_state["cmp_runs"] = ids
    if missing:
        st.warning(f"Not in this store: {plain(', '.join(missing))}")
elif "cmp_runs" not in st.session_state:
    st.session_state["cmp_runs"] = st.session_state.get("_cmp_sel", [])
st.session_state["cmp_runs"] = [i for i in st.session_state["cmp_runs"] if i in by_id]
chosen = st.multiselect("Runs to compare", list(by_id), key="cmp_runs",
                        format_func=lambda i: f"{labels[i]} · {by_id[i].status}")
st.session_state["_cmp_sel"] = chosen
st.session_state["_cmp_url"] = cmp.encode_run_ids(chosen)
if chosen:
    st.query_params["runs"] = cmp.encode_run_ids(chosen)
elif "runs" in st.query_params:
    del st.query_params["runs"]
selected = [by_id[i] for i in chosen]
lab_colors = label_colors(chosen, labels, colors)
if chosen:
    st.markdown(" &nbsp; ".join(f"{swatch(colors[i], labels[i])} {html.escape(labels[i])}" for i in chosen),
                unsafe_allow_html=True)

# ---- ablation builder -------------------------------------------------------------------------
with st.expander("Ablation builder: queue runs that vary parameters of a base configuration"):
    base_options = ["(study base)", *chosen, *[i for i in by_id if i not in chosen]]
    base_pick = st.selectbox("Base configuration", base_options, key="abl_base",
                             format_func=lambda i: i if i == "(study base)" else f"from run {labels[i]}")
    base = presets.STUDY_BASE.with_values(data=data_setting()) if base_pick == "(study base)" else by_id[base_pick].config
    flat = base.flat()
    vary = st.multiselect("Parameters to vary", cmp.param_names(), key="abl_params")
    grid, problems = {}, []
    for param in vary:
        text = st.text_input(f"Values for `{param}` (comma-separated; base: {cmp.value_label(flat[param])})",
                             key=f"abl_{param}")
        try:
            values = cmp.parse_values(text, flat[param])
            cmp.build_grid(base, {param: values})  # each value must make a valid configuration
        except EngineError as exc:
            problems.append(f"{param}: {exc}")
        else:
            if values:
                grid[param] = values
    for problem in problems:
        st.error(problem)
    n_grid = len(cmp.build_grid(base, grid)) if grid and not problems else 0
    b1, b2, b3 = st.columns(3)
    from_run = base_pick != "(study base)"
    base_name = labels[base_pick] if from_run else "study base"
    if b1.button(f"Queue {n_grid} runs", disabled=n_grid == 0, type="primary", key="abl_queue"):
        ids = get_manager().submit_grid(base, grid, name_prefix=base_name)
        st.success(f"Queued {len(ids)} runs. Progress is in the sidebar.")
    n_seeds = int(b2.number_input("Seeds", 2, 20, 3, key="abl_seeds"))
    # A stored run already has its seed: add N new ones after it. The study base: seeds 0..N-1.
    seeds = list(range(base.train.seed + 1, base.train.seed + 1 + n_seeds)) if from_run else list(range(n_seeds))
    if b2.button(f"Repeat over {n_seeds} seeds", key="abl_repeat",
                 help=f"Queue the base configuration with seeds {seeds[0]}..{seeds[-1]}: the runs share a seed "
                      "group with the base, so they can be shown as mean ± std."):
        ids = get_manager().repeat_seeds(base, seeds, name=base_name)
        st.success(f"Queued {len(ids)} runs (seeds {seeds[0]}..{seeds[-1]}).")
    epochs = b3.number_input("Epochs per run (study: 50)", 1, 500, base.train.epochs, key="abl_epochs")
    if b3.button("Study ablation preset (10 runs)", key="abl_study", help="The study's base and its nine variations, "
                 "from this base, tagged 'study'."):
        rows = presets.study_ablation(base, **{"train.epochs": int(epochs)})
        get_manager().submit_many([(config, f"study: {name}", ("study",)) for name, config in rows])  # rows that can, train as a group
        st.success(f"Queued {len(rows)} runs tagged 'study'.")

# ---- side by side -----------------------------------------------------------------------------
if selected:
    st.subheader("Side by side")
    groups = cmp.seed_groups(selected, labels)
    has_groups = any(len(m) > 1 for m in groups.values())
    c1, c2, c3, c4, c5 = st.columns(5)
    x_axis = c1.radio("x axis", ["epoch", "seconds"], horizontal=True, key="cmp_x")
    log_scale = c2.toggle("log-scale loss", key="cmp_log")
    smoothing = c3.slider("EMA smoothing", 0.0, 0.95, 0.0, 0.05, key="cmp_ema")
    grouped = c4.toggle("group seed repeats", value=has_groups, disabled=not has_groups, key="cmp_grouped")
    band = c5.radio("band", ["std", "minmax"], horizontal=True, disabled=not grouped, key="cmp_band")
    if grouped and has_groups:
        loss_bands = cmp.smooth_bands(cmp.group_bands(groups, "val_loss"), smoothing)
        acc_bands = cmp.smooth_bands(cmp.group_bands(groups, "val_accuracy"), smoothing)
        left, right = st.columns(2)
        group_colors = {label: colors[members[0].id] for label, members in groups.items()}
        left.altair_chart(cmp.band_chart(loss_bands, x=x_axis, band=band, y_title="validation loss",
                                         log_scale=log_scale, colors=group_colors), width="stretch")
        right.altair_chart(cmp.band_chart(acc_bands, x=x_axis, band=band, y_title="validation accuracy",
                                          colors=group_colors), width="stretch")
        st.dataframe(cmp.group_summary(groups), hide_index=True, width="stretch")
    else:
        hist = cmp.history_frame(selected, labels)
        left, right = st.columns(2)
        left.altair_chart(charts.loss_curves(hist, x=x_axis, log_scale=log_scale, smoothing=smoothing,
                                             colors=lab_colors), width="stretch")
        right.altair_chart(charts.accuracy_curves(hist, x=x_axis, smoothing=smoothing, colors=lab_colors,
                                                  columns={"val_accuracy": "validation accuracy",
                                                           "val_shift_accuracy": "cross-collection validation",
                                                           "val_source_accuracy": "cross-collection validation (source)"}),
                           width="stretch")
        chosen_rows = df[df["id"].isin(chosen)]
        st.dataframe(chosen_rows[["name", "status", *cmp.METRIC_COLUMNS]], hide_index=True, width="stretch",
                     column_config=PCT)

    d1, d2 = st.columns(2)
    split = d1.radio("Split", ["validation", "test"], horizontal=True, key="cmp_split",
                     help="Validation chooses, test reports: the significance test below follows this too.")
    if split == "test":
        d1.caption(verdicts.TEST_SPLIT_NOTE)
    normalize = d2.toggle("row-normalised", value=True, key="cmp_norm")
    matrices = {run.id: cmp.confusion_matrix_of(run, split) for run in selected}
    domain = cmp.confusion_domain(matrices.values(), normalize)
    with_matrix = [run for run in selected if matrices[run.id] is not None]
    for start in range(0, len(with_matrix), 2):
        for col, run in zip(st.columns(2), with_matrix[start:start + 2]):
            col.altair_chart(charts.confusion_heatmap(matrices[run.id], SHORT_NAMES, normalize=normalize,
                                                      title=labels[run.id], domain=domain), width="stretch")
    if with_matrix:
        st.altair_chart(charts.per_class_bars(cmp.per_class_frame(with_matrix, labels, split),
                                              title=f"per-class accuracy ({split})", colors=lab_colors),
                        width="stretch")
    else:
        st.info("None of the chosen runs has finished evaluation yet.")

    diff = cmp.param_diff(selected, labels)
    st.markdown("**Parameters that differ**")
    if len(selected) < 2:
        st.caption("Choose two or more runs.")
    elif diff.empty:
        st.caption("None: the runs share every parameter.")
    else:
        st.dataframe(diff, width="stretch")
    comparison = df[df["id"].isin(chosen)]
    st.download_button("Download the comparison (CSV)", csv_bytes(comparison),
                       "comparison.csv", "text/csv")

# ---- honest comparison of two runs -----------------------------------------------------------
split = st.session_state.get("cmp_split", "validation")
finished_sel = [run for run in selected if (run.metrics or {}).get(split)]
if len(finished_sel) >= 2:
    st.subheader("Is the difference real?")
    st.caption(f"On the **{split}** split (the *Split* selector above).")
    units = {f"{labels[r.id]}": [r] for r in finished_sel}
    if grouped and has_groups:
        units = {label: [r for r in members if (r.metrics or {}).get(split)] for label, members in groups.items()}
        units = {k: v for k, v in units.items() if v}
    names = list(units)
    h1, h2, h3 = st.columns([2, 2, 1.5])
    name_a = h1.selectbox("A (reference, e.g. the ablation's base)", names, index=0, key="cmp_a")
    name_b = h2.selectbox("B", names, index=min(1, len(names) - 1), key="cmp_b")
    mode = h3.radio("Test", sig.MODES, key="cmp_family", disabled=len(names) < 3,
                    help="Every unit against A (an ablation's rows against its base), or every pair. "
                         "p-values are Holm-adjusted over the comparisons made.")
    runs_a, runs_b = units[name_a], units[name_b]
    stopped = [labels[r.id] for r in [*runs_a, *runs_b] if cmp.partial_epochs(r)]
    if stopped:
        st.warning(f"Partial: {plain(', '.join(stopped))} stopped before all its epochs, so this compares unequal "
                   "training budgets; a difference may be the missing epochs rather than the setting.")
    if name_a == name_b:
        st.info("Choose two different runs.")
    else:
        pairs = tuple(sig.family_pairs(names, name_a, name_b, mode))
        key = tuple((label, tuple((r.id, r.finished) for r in members)) for label, members in units.items())
        rows = family(key, pairs, split)
        result = next(r for r in rows if (r["a"], r["b"]) == (name_a, name_b))
        st.markdown(f"**A** = {plain(name_a)}, **B** = {plain(name_b)}")
        if "error" in result:
            st.warning(f"Cannot test these two: {result['error']}")
        else:
            (st.success if result["significant"] else st.info)(verdicts.verdict(result, "A", "B"))
            for note in verdicts.caveats(result, "A", "B"):
                st.caption(note)
            if result["family_size"] > 1:
                st.caption(verdicts.HOLM_NOTE.format(m=result["family_size"], alpha=result["alpha"]))
            st.caption(verdicts.method_why(result))
            if len(runs_a) == 1 and len(runs_b) == 1:
                ci = [(name_a, accuracy_intervals(runs_a[0].id, runs_a[0].finished, split)),
                      (name_b, accuracy_intervals(runs_b[0].id, runs_b[0].finished, split))]
                st.dataframe([{"run": n, f"{split} accuracy": c["accuracy"],
                               "95% CI": f"{c['accuracy_ci'][0]:.1%} – {c['accuracy_ci'][1]:.1%}",
                               "balanced accuracy": c["balanced_accuracy"],
                               "95% CI (balanced)": f"{c['balanced_accuracy_ci'][0]:.1%} – {c['balanced_accuracy_ci'][1]:.1%}"}
                              for n, c in ci], hide_index=True, column_config={
                    f"{split} accuracy": st.column_config.NumberColumn(format="percent"),
                    "balanced accuracy": st.column_config.NumberColumn(format="percent")})
        if len(rows) > 1:
            what = "every selected run or seed group against A" if mode == sig.MODES[0] else "every pair"
            st.markdown(f"**Ablation table: {what}** ({split} split)")
            st.dataframe(sig.family_frame(rows), hide_index=True, width="stretch", column_config={
                c: st.column_config.NumberColumn(c, format="percent") for c in ("accuracy A", "accuracy B")})
            tested = sum("error" not in r for r in rows)
            st.caption(verdicts.HOLM_NOTE.format(m=tested, alpha=0.05) + " Verdicts use the adjusted p.")

        # a seed group counts as its mean confusion matrix
        conf_a = cmp.mean_confusion(runs_a, split)
        conf_b = cmp.mean_confusion(runs_b, split)
        if conf_a is not None and conf_b is not None:
            per = ", mean over seeds" if max(len(runs_a), len(runs_b)) > 1 else ""
            st.markdown(f"**Confusion difference B - A ({split}{per})**: blue cells are what B fixed, red what it broke.")
            diff_df = cmp.confusion_difference_frame(conf_a, conf_b, normalize)
            st.altair_chart(cmp.confusion_difference_chart(diff_df, normalize=normalize), width="stretch")
            for sentence in verdicts.describe_confusion_difference(conf_a, conf_b, SHORT_NAMES):
                st.markdown(f"- {sentence}")

# ---- listen to the mistakes ------------------------------------------------------------------
if finished_sel:
    st.subheader("Listen to the mistakes")
    m1, m2, m3, m4 = st.columns(4)
    who = m1.selectbox("Run", [r.id for r in finished_sel], format_func=labels.get, key="mis_run")
    m_split = m2.selectbox("Split", ["test", "validation"], key="mis_split")
    cell = (who, m_split)
    if st.session_state.get("_mis_cell") != cell:  # a new run or split opens on its largest mistake
        st.session_state["_mis_cell"] = cell
        largest = cmp.largest_mistake(cmp.confusion_matrix_of(by_id[who], m_split))
        st.session_state["mis_actual"], st.session_state["mis_pred"] = largest or (0, 1)
    actual = m3.selectbox("Actual", range(len(SHORT_NAMES)), format_func=SHORT_NAMES.__getitem__, key="mis_actual")
    predicted = m4.selectbox("Predicted as", range(len(SHORT_NAMES)), format_func=SHORT_NAMES.__getitem__,
                             key="mis_pred")
    run = by_id[who]
    clips = cmp.mistakes_frame(predictions(run.id, run.finished).get(m_split) or {}, actual, predicted)
    st.caption(f"{len(clips)} {SHORT_NAMES[actual]} clips of the {m_split} split predicted as "
               f"{SHORT_NAMES[predicted]}, most confident first.")
    st.dataframe(clips, hide_index=True, width="stretch")
    if len(clips):
        if not dataset_ready(run.config.data):
            st.caption("The run's dataset is not available here, so the clips cannot be played.")
        else:
            try:
                ds = load_dataset_cached(run.config.data)
            except EngineError as exc:
                ds = None
                st.caption(f"Cannot read the run's dataset: {exc}")
            from engine.dataset import find_clip
            for uuid in clips["uuid"].head(10) if ds else []:
                try:
                    st.audio(str(find_clip(ds, uuid).path))
                    st.caption(uuid)
                except EngineError as exc:
                    st.caption(f"{uuid}: {exc}")

# ---- clip by clip: what changed, and how often runs agree ------------------------------------
if len(finished_sel) >= 2:
    st.subheader("Clips that flip")
    flip_units = {labels[r.id]: [r] for r in finished_sel}
    if grouped and has_groups:
        flip_units = {k: v for k, v in ((label, [r for r in members if r.metrics.get("test")])
                                        for label, members in groups.items()) if v}
    flip_split = st.radio("Split", ["validation", "test"], horizontal=True, key="flip_split")

    flips_view.render_flips(flip_units, lambda r: predictions(r.id, r.finished), flip_split,
                            lambda clip_id: flips_view.play_dataset_clip(finished_sel[0].config.data, clip_id))
    st.subheader("Agreement between runs")
    flips_view.render_agreement(finished_sel, labels, lambda r: predictions(r.id, r.finished), flip_split)

# ---- every finished run: generalisation gap, parameters vs metrics -----------------------------
gaps = cmp.gap_frame(runs, labels)
if len(gaps):
    st.subheader("Validation vs test")
    st.caption("Validation and training come from one collection, test from another: a large positive gap "
               "means the model learnt the collection as much as the instrument.")
    st.dataframe(gaps.drop(columns="id"), hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(c, format="percent") for c in gaps.columns if c not in ("run", "id", "class")})
    gap_run = st.selectbox("Per-class breakdown of", gaps["id"], format_func=labels.get, key="gap_run")
    per_class = cmp.gap_per_class_frame(by_id[gap_run])
    long = per_class.melt(id_vars="class", value_vars=["validation", "test"], var_name="split", value_name="accuracy")
    st.altair_chart(charts.per_class_bars(long, group="split", title="per-class accuracy"), width="stretch")

    st.subheader("Parameters vs metrics")
    finished_df = df[df["id"].isin(gaps["id"])]
    p1, p2, p3 = st.columns(3)
    view = p1.radio("View", ["scatter", "parallel coordinates"], horizontal=True, key="pm_view")
    pm_metric = p2.selectbox("Metric", list(cmp.METRICS), index=list(cmp.METRICS).index("val acc"), key="pm_metric")
    if cmp.is_test_metric(pm_metric):
        p2.caption(verdicts.TEST_SPLIT_NOTE)
    varying = [p for p in cmp.param_names() if finished_df[p].map(cmp.value_label).nunique() > 1] or list(cmp.KEY_PARAMS)
    if view == "scatter":
        pm_param = p3.selectbox("Parameter", varying, key="pm_param")
        st.altair_chart(cmp.param_metric_chart(finished_df, pm_param, pm_metric), width="stretch")
    else:
        axes = p3.multiselect("Parameters", cmp.param_names(), default=varying[:5], key="pm_axes")
        st.altair_chart(cmp.parallel_coordinates_chart(cmp.parallel_frame(finished_df, axes, pm_metric),
                                                       [*axes, pm_metric]), width="stretch")
