"""Search: an Optuna hyperparameter search whose trials are ordinary runs, then an honest
confirmation of its winner with fresh seeds (docs/GUIDE.md, "Search, then confirm")."""

from __future__ import annotations

import streamlit as st

from engine.core.errors import EngineError
from ui import search_view as sv
from ui.common import data_setting, get_manager, get_store, plain, render_sidebar

st.set_page_config(page_title="Search · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Search")
st.write("Search hyperparameters with Optuna (TPE sampler, pruning on each epoch's cross-collection validation), "
         "then **confirm**: the best configurations and the recommended preset are trained again with fresh "
         "seeds, and the seed-level test with Holm says whether the winner is better beyond the seed spread. "
         "Every trial is an ordinary run, tagged `search:NAME` in Compare's run table.")

store = get_store()
jobs = sv.get_search_jobs()
from engine.runs.search import importances, search_names, search_summary  # noqa: E402

try:
    names = search_names()
except Exception as exc:  # a damaged search database: say so, keep the page
    st.error(f"The search database cannot be read: {plain(exc)}")
    st.stop()

# ---- start a search -----------------------------------------------------------------------
with st.expander("Start a search", expanded=not names):
    from engine.core.search_space import SearchError, read_space
    from engine.learn.presets import RECOMMENDED
    from engine.runs.search import SearchSpec

    with st.form("search_form"):
        name = st.text_input("Name", value=f"search-{len(jobs.searches) + 1}", max_chars=80)
        left, mid, right = st.columns(3)
        trials = left.number_input("Trials", min_value=1, max_value=500, value=20, step=1)
        epochs = mid.number_input("Epochs per trial", min_value=1, max_value=500, value=RECOMMENDED.train.epochs)
        pruner = right.selectbox("Pruner", ["median", "halving", "none"],
                                 help="median: stop a trial whose epoch is below the median of earlier trials at "
                                      "that epoch; halving: successive halving")
        space_text = st.text_area("Search space (JSON: dotted name -> range or list of choices)",
                                  value=sv.default_space_text(), height=220)
        submitted = st.form_submit_button("Start search", type="primary")
    if submitted:
        try:
            base = RECOMMENDED.with_values(**{"data": data_setting(), "train.epochs": int(epochs)})
            spec = SearchSpec(name=name.strip(), space=read_space(space_text, "json", base), base=base,
                              trials=int(trials), pruner=pruner)
            jobs.start(get_manager(), spec=spec)
            names = search_names()
            st.session_state["search_name"] = spec.name
        except (SearchError, EngineError) as exc:
            st.error(plain(exc))

# ---- the searches -------------------------------------------------------------------------
if not names:
    st.info("No search yet. Start one above: every trial trains like a run from the Train page, so begin with "
            "a few trials of a few epochs on the demo data.")
    st.stop()
if st.session_state.get("search_name") not in names:
    st.session_state["search_name"] = names[-1]
chosen = st.selectbox("Search", names, key="search_name")


def show_search(name: str) -> None:
    """The live view of one search: progress, time left, charts, trials."""
    summary = search_summary(name)
    running = jobs.running(name)
    job = jobs.searches.get(name)
    st.progress(min(1.0, summary["done"] / max(1, summary["trials"])), text=sv.eta_words(summary)
                + (" (running)" if running else ""))
    if job and job.error:
        st.error(plain(job.error))
    if summary.get("note"):
        st.caption(summary["note"])
    buttons = st.columns(4)
    if running and buttons[0].button("Stop the search", key="search_stop",
                                     help="Cancels the running trial (its trial is not counted); Resume goes on"):
        jobs.stop(name)
        st.rerun()
    elif not running and summary["done"] < summary["trials"] and buttons[0].button("Resume", key="search_resume"):
        try:
            jobs.start(get_manager(), resume=name)
            st.rerun()  # the whole page, so that the live view refreshes on its timer
        except EngineError as exc:
            st.error(plain(exc))
    df = sv.trials_frame(summary["rows"])
    if df.empty:
        st.caption("No trial yet.")
        return
    best = summary["best"]
    if best:
        st.markdown(f"**Best so far:** trial {best['trial']}, {100 * best['value']:.1f}% on "
                    f"{sv.objective_words(summary['objective_split'])} (one seed: confirm it below).")
    left, right = st.columns(2)
    left.altair_chart(sv.best_so_far_chart(df), width="stretch")
    right.altair_chart(sv.trials_over_time_chart(df), width="stretch")
    params = list(summary["space"])
    chart = sv.parallel_chart(df, params)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    found = importances(name)
    if found:
        st.altair_chart(sv.importance_chart(found), width="stretch")
    else:
        st.caption("Parameter importance appears once two trials have completed with different results.")
    st.dataframe(df.drop(columns=["started", "ended", "minutes", "best_so_far"]), hide_index=True,
                 column_config={"value": st.column_config.NumberColumn("objective", format="percent")})


st.fragment(run_every=2.0 if jobs.running(chosen) else None)(show_search)(chosen)

# ---- confirm --------------------------------------------------------------------------------
st.subheader("Confirm")
st.caption("Trains the top configurations and the search's base (the recommended preset) again with fresh seeds, "
           "never the search's, then decides on validation by the seed-level test with Holm. Test accuracy is "
           "shown only after the decision.")
c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
top = c1.number_input("Top configurations", min_value=1, max_value=10, value=3)
seeds = c2.number_input("Fresh seeds each", min_value=2, max_value=20, value=5)
if c3.button("Confirm", key="confirm_button", disabled=jobs.running(chosen)):
    try:
        jobs.confirm(get_manager(), chosen, int(top), int(seeds))
    except EngineError as exc:
        st.error(plain(exc))


def show_confirmation(name: str) -> None:
    job = jobs.confirms.get(name)
    if job is None:
        return
    if job.error:
        st.error(plain(job.error))
        return
    if job.running:
        done = sum(1 for run_id in (job.result or {}).get("ids", []) if run_id not in set(get_manager().active()))
        st.progress(done / max(1, len((job.result or {}).get("ids", [])) or 1),
                    text=f"confirming: {done} runs done")
        return
    verdict = job.result
    st.markdown(f"**Decision:** {plain(verdict['decision'])}")
    st.caption(f"{verdict['method']}; {verdict['split']}, alpha {verdict['alpha']}; fresh seeds {verdict['seeds']} "
               f"(the search used {verdict['search_seeds']})" + (f". {verdict['note']}" if verdict.get("note") else ""))
    st.dataframe(sv.verdict_frame(verdict), hide_index=True)
    for c in verdict["comparisons"]:
        st.write(plain(c["words"]))
    st.markdown(f"**{verdict['after_decision']['label'].capitalize()}:**")
    st.dataframe([{"configuration": label, "test accuracy": cell["mean"], "seed SD": cell["std"], "runs": cell["runs"]}
                  for label, cell in verdict["after_decision"]["test"].items()], hide_index=True)


confirming = jobs.confirms.get(chosen)
st.fragment(run_every=2.0 if confirming and confirming.running else None)(show_confirmation)(chosen)
