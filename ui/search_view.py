"""Search page: searches and confirmations running in background threads, and their charts.

`SearchJobs` (one per server, `get_search_jobs`) starts `engine.runs.search.Search.run` and a
confirmation (`engine.compare.confirm`) in daemon threads that never call `st.*`: the page
reads their state (and the study in cache/search.sqlite) on a timer. The chart builders take
`engine.runs.search.search_summary(...)["rows"]` and return Altair charts; the parallel
coordinates are Compare's (`ui.compare.params`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from engine.core.errors import EngineError
from ui.compare.params import parallel_coordinates_chart, parallel_frame

STATE_COLORS = {"complete": "#0072B2", "pruned": "#E69F00", "fail": "#D55E00", "running": "#999999",
                "waiting": "#CCCCCC"}


@dataclass
class _Job:
    """One background search or confirmation: its thread, the Search (to stop it), its outcome."""

    thread: threading.Thread
    search: Any = None
    error: str | None = None
    result: Any = None
    started: float = field(default_factory=time.time)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()


class SearchJobs:
    """Background searches and confirmations of this server, by search name."""

    def __init__(self) -> None:
        self.searches: dict[str, _Job] = {}
        self.confirms: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def running(self, name: str) -> bool:
        job = self.searches.get(name)
        return bool(job and job.running)

    def start(self, manager: Any, spec: Any = None, resume: str | None = None) -> str:
        """Start a new search (`spec`) or continue a stored one (`resume`); returns its name.
        SearchError (from the engine) when the name exists or nothing can be resumed."""
        from engine.runs.search import resume_search, start_search

        with self._lock:
            name = resume or spec.name
            if self.running(name):
                raise EngineError(f"search {name!r} is already running")
            search = resume_search(resume, manager) if resume else start_search(spec, manager)
            job = _Job(threading.Thread(target=self._run, args=(name,), name=f"search-{name}", daemon=True),
                       search=search)
            self.searches[name] = job
            job.thread.start()
            return name

    def _run(self, name: str) -> None:
        job = self.searches[name]
        try:
            job.search.run()
        except Exception as exc:  # shown on the page; the runs stay in the store
            job.error = str(exc)

    def stop(self, name: str) -> None:
        job = self.searches.get(name)
        if job and job.running:
            job.search.stop()

    def confirm(self, manager: Any, name: str, top: int, seeds: int) -> None:
        """Queue a confirmation of `name` and decide when its runs end (in a thread)."""
        from engine.compare.confirm import plan_confirmation

        with self._lock:
            job = self.confirms.get(name)
            if job and job.running:
                raise EngineError(f"a confirmation of {name!r} is already running")
            plan = plan_confirmation(name, top=top, seeds=seeds)  # errors before any run is queued
            job = _Job(threading.Thread(target=self._confirm, args=(manager, name, plan), daemon=True,
                                        name=f"confirm-{name}"))
            self.confirms[name] = job
            job.thread.start()

    def _confirm(self, manager: Any, name: str, plan: Any) -> None:
        from engine.compare.confirm import confirm_verdict, queue_confirmation

        job = self.confirms[name]
        try:
            ids = queue_confirmation(manager, plan)
            job.result = {"ids": ids}
            manager.wait(ids)
            job.result = confirm_verdict(plan, [manager.record(i) for i in ids], manager.store)
        except Exception as exc:
            job.error = str(exc)


@st.cache_resource(show_spinner=False)
def get_search_jobs() -> SearchJobs:
    """This server's background searches (one registry per server)."""
    return SearchJobs()


# ---- frames and charts (no st.* below) -----------------------------------------------------


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs, started/ended (datetime), minutes since
    the first trial started, best so far (complete trials), run id, and the parameters."""
    if not rows:
        return pd.DataFrame(columns=["trial", "state", "value", "epochs", "minutes", "best_so_far", "run_id"])
    df = pd.DataFrame([{"trial": r["number"], "state": r["state"], "value": r["value"], "epochs": r["epochs"],
                        "started": r["started"], "ended": r["ended"], "run_id": r["run_id"], **r["params"]}
                       for r in rows]).sort_values("trial")
    first = df["started"].dropna().min()
    df["minutes"] = ((df["ended"].fillna(time.time()) - first) / 60.0) if pd.notna(first) else 0.0
    complete = df["value"].where(df["state"] == "complete")
    df["best_so_far"] = complete.cummax()
    return df


SPLIT_WORDS = {"validation_program": "cross-val program", "validation_source": "cross-val source",
               "validation": "in-collection validation"}
TRIAL_AXIS = alt.Axis(format="d", tickMinStep=1)


def objective_words(split: str | None) -> str:
    """How the objective's split is named on the pages ('cross-val program', ...)."""
    return SPLIT_WORDS.get(split or "", split or "validation")


def best_so_far_chart(df: pd.DataFrame) -> alt.Chart:
    """Each trial's objective (points by state; a pruned trial at its last reported epoch) and
    the best so far (a step line) by trial number."""
    points = alt.Chart(df.dropna(subset=["value"])).mark_circle(size=60).encode(
        x=alt.X("trial:Q", title="trial", axis=TRIAL_AXIS),
        y=alt.Y("value:Q", title="objective (validation accuracy)", axis=alt.Axis(format=".0%")),
        color=alt.Color("state:N", scale=alt.Scale(domain=list(STATE_COLORS), range=list(STATE_COLORS.values()))),
        tooltip=["trial:Q", "state:N", alt.Tooltip("value:Q", format=".1%"), "epochs:Q"])
    line = alt.Chart(df.dropna(subset=["best_so_far"])).mark_line(interpolate="step-after", color="#000000").encode(
        x="trial:Q", y="best_so_far:Q")
    return (line + points).properties(height=260, title="Best so far")


def trials_over_time_chart(df: pd.DataFrame) -> alt.Chart:
    """Each trial at the minute it ended (since the search started) and the epochs it trained
    (pruned ones fewer); a running trial at now."""
    return alt.Chart(df).mark_circle(size=80, opacity=0.9).encode(
        x=alt.X("minutes:Q", title="minutes since the search started"), y=alt.Y("epochs:Q", title="epochs trained"),
        color=alt.Color("state:N", scale=alt.Scale(domain=list(STATE_COLORS), range=list(STATE_COLORS.values()))),
        tooltip=["trial:Q", "state:N", "epochs:Q", alt.Tooltip("minutes:Q", format=".1f")],
    ).properties(height=220, title="Trials over time")


def importance_chart(importances: dict[str, float]) -> alt.Chart:
    """Optuna's fANOVA importances as horizontal bars, largest first."""
    df = pd.DataFrame({"parameter": list(importances), "importance": list(importances.values())})
    return alt.Chart(df).mark_bar(color="#0072B2").encode(
        x=alt.X("importance:Q", title="share of the objective's variance (fANOVA)", axis=alt.Axis(format=".0%")),
        y=alt.Y("parameter:N", sort="-x", title=None),
        tooltip=["parameter:N", alt.Tooltip("importance:Q", format=".1%")],
    ).properties(height=max(80, 28 * len(df)), title="Parameter importance")


def parallel_chart(df: pd.DataFrame, params: list[str]) -> alt.Chart | None:
    """Compare's parallel coordinates over the completed trials (None with fewer than two)."""
    done = df[df["state"] == "complete"].dropna(subset=["value"])
    if len(done) < 2:
        return None
    frame = done.assign(id=done["run_id"].fillna(done["trial"].astype(str)), name="trial " + done["trial"].astype(str),
                        objective=done["value"])
    axes = [p for p in params if p in frame]
    return parallel_coordinates_chart(parallel_frame(frame, axes, "objective"), [*axes, "objective"])


def eta_words(summary: dict[str, Any]) -> str:
    """'7/20 trials, about 4 min left' (or without the time before a trial has ended)."""
    text = f"{summary['done']}/{summary['trials']} trials"
    if summary.get("eta_s") is not None and summary["done"] < summary["trials"]:
        minutes = summary["eta_s"] / 60
        text += f", about {minutes:.0f} min left" if minutes >= 1 else f", about {summary['eta_s']:.0f} s left"
    return text


def default_space_text() -> str:
    from engine.core.search_space import DEFAULT_SPACE

    lines = [f" {json.dumps(name)}: {json.dumps(spec)}" for name, spec in DEFAULT_SPACE.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def verdict_frame(verdict: dict[str, Any]) -> pd.DataFrame:
    """The comparisons of a confirmation: row, difference and interval in points, effect size, p, Holm p."""
    rows = []
    for c in verdict["comparisons"]:
        if "error" in c:
            rows.append({"configuration": c["row"], "verdict": c["error"]})
            continue
        rows.append({"configuration": c["row"], "difference (points)": round(100 * c["difference"], 1),
                     "95% CI": f"{100 * c['ci'][0]:+.1f} to {100 * c['ci'][1]:+.1f}",
                     "effect size (seed SDs)": None if c["effect_size"] is None else round(c["effect_size"], 2),
                     "p": c["p_value"], "Holm p": c["p_adjusted"],
                     "verdict": "better" if c["significant"] and c["difference"] > 0 else
                     "worse" if c["significant"] else "not distinguishable"})
    return pd.DataFrame(rows)
