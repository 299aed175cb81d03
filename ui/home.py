"""The home page's words: the newcomer's first steps."""

from __future__ import annotations


# (page file, link label) shown under the steps
GETTING_STARTED_LINKS: tuple[tuple[str, str], ...] = (
    ("pages/1_Dataset.py", "Dataset: what is in the data"),
    ("pages/2_Train.py", "Train: one run, live"),
    ("pages/3_Compare.py", "Compare: runs side by side"),
)

# Seconds per training epoch assumed before any run has been measured here: the study's base
# configuration on the default demo took 15-24 s for 50 epochs on a 2-core machine (docs/FACTS).
ASSUMED_SECONDS_PER_EPOCH = 0.5


def seconds_per_epoch(runs, data: str) -> tuple[float, bool]:
    """(seconds per epoch, measured?): the median pace of the finished runs on `data` in this
    store (their last epoch's wall-clock seconds over their epochs), else the assumed pace."""
    import statistics

    paces = []
    for r in runs:
        history = r.history or []
        if r.status == "finished" and getattr(r.config, "data", None) == data and history:
            seconds = (history[-1] or {}).get("seconds")
            if seconds and seconds > 0:
                paces.append(float(seconds) / len(history))
    return (statistics.median(paces), True) if paces else (ASSUMED_SECONDS_PER_EPOCH, False)


def rough_duration(seconds: float) -> str:
    """'about 40 s', 'about 4 min', 'about 1 h 10 min' (rounded: it is an estimate)."""
    if seconds < 60:
        return f"about {max(10, round(seconds / 10) * 10):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def ablation_estimate(plan, pace: float, measured: bool) -> str:
    """What an ablation button queues and roughly how long it takes on this machine, in words:
    '10 runs × 50 epochs, about 4 min here (estimate: ...)'. `plan`: PlannedRuns (their configs'
    epochs count); the runs train one after another on this machine's CPU."""
    epochs = [run.config.train.epochs for run in plan]
    each = f"{epochs[0]} epochs" if len(set(epochs)) == 1 else f"{min(epochs)}-{max(epochs)} epochs"
    how = (f"estimate from the {pace:.1f} s per epoch measured on this dataset here" if measured
           else f"estimate at {pace:.1f} s per epoch, the study base on the demo; larger models, "
                "whole clips and the real dataset take longer")
    return f"{len(plan)} runs × {each}, {rough_duration(pace * sum(epochs))} ({how})"


def getting_started(have_data: bool, have_runs: bool, have_finished: bool) -> str:
    """The newcomer's three steps as a Markdown numbered list (one line each), each step already
    done marked "✓ … (done)" and struck through, the next one in bold. The pages it names are
    linked below it with st.page_link (GETTING_STARTED_LINKS), not in bold text."""
    steps = [
        (have_data, "Have a dataset: make the demo data (1-2 minutes), or point the dashboard at "
                    "Medley-solos-DB (the dataset folder setting)."),
        (have_runs, "Run the study's ablation below, or one run on the Train page "
                    "(the CPU trains one run at a time; the others wait in the queue)."),
        (have_finished, "Watch them on the Train page or in the sidebar, then compare them on the Compare page."),
    ]
    upcoming = next((k for k, (done, _) in enumerate(steps) if not done), None)
    lines = []
    for k, (done, text) in enumerate(steps):
        shown = f"✓ ~~{text}~~ (done)" if done else (f"**{text}**" if k == upcoming else text)
        lines.append(f"{k + 1}. {shown}")
    return "\n".join(lines)


RATE_COLUMNS = ("val acc.", "val balanced acc.", "test acc.", "test balanced acc.")


def best_runs_frame(finished, limit: int = 10):
    """The home page's "best finished runs": one row per run, the headline metric
    (ui.defaults.HEADLINE_METRIC on validation) first and ranking, best first, at most `limit`."""
    import pandas as pd

    from ui import defaults

    def m(r, split, key):
        return (r.metrics.get(split) or {}).get(key)

    other = "balanced_accuracy" if defaults.HEADLINE_METRIC == "accuracy" else "accuracy"
    names = {"accuracy": "acc.", "balanced_accuracy": "balanced acc."}
    rows = [{"run": r.name, f"val {names[defaults.HEADLINE_METRIC]}": m(r, "validation", defaults.HEADLINE_METRIC),
             f"val {names[other]}": m(r, "validation", other),
             f"test {names[defaults.HEADLINE_METRIC]}": m(r, "test", defaults.HEADLINE_METRIC),
             f"test {names[other]}": m(r, "test", other),
             "epochs": r.epochs_done, "tags": ", ".join(r.tags), "warning": r.warning or "", "id": r.id}
            for r in finished]
    columns = ["run", *(f"{s} {names[k]}" for s in ("val", "test") for k in (defaults.HEADLINE_METRIC, other)),
               "epochs", "tags", "warning", "id"]
    table = pd.DataFrame(rows, columns=columns)
    rank = f"val {names[defaults.HEADLINE_METRIC]}"
    table[list(RATE_COLUMNS)] = table[list(RATE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    return table.sort_values(rank, ascending=False, na_position="last", kind="stable").head(limit)
