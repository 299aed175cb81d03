"""The home page's words: the newcomer's first steps."""

from __future__ import annotations


def getting_started(have_data: bool, have_runs: bool, have_finished: bool) -> str:
    """The newcomer's three steps as a Markdown numbered list (one line each), each step already
    done marked "✓ … (done)" and struck through, the next one in bold."""
    steps = [
        (have_data, "Have a dataset: make the demo data (1-2 minutes), or point the dashboard at "
                    "Medley-solos-DB above."),
        (have_runs, "Run the study's ablation below, or one run on the **Train** page "
                    "(the CPU trains one run at a time; the others wait in the queue)."),
        (have_finished, "Watch them on the **Train** page or in the sidebar, then **Compare** them."),
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
