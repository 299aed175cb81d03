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
