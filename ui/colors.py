"""One colour per run, the same on every chart of every page, whatever else is selected.

A run's colour comes from its creation order in the store (`RunStore.creation_order()`) and
the Okabe-Ito palette (Okabe & Ito 2008), whose eight colours stay apart for the common forms of
colour blindness. They are ordered so that runs created one after another (an ablation, a seed
group) never get neighbouring hues (blue, orange, green, vermillion, sky blue, purple, yellow,
black); the ninth run starts the cycle again (the legend and the hover name every run). No
streamlit in here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

OKABE_ITO: tuple[str, ...] = (
    "#0072b2",  # blue
    "#e69f00",  # orange
    "#009e73",  # bluish green
    "#d55e00",  # vermillion
    "#56b4e9",  # sky blue
    "#cc79a7",  # reddish purple
    "#f0e442",  # yellow
    "#000000",  # black
)


def color_for(ordinal: int) -> str:
    """'#rrggbb' for the run created `ordinal`-th (1-based; any integer works)."""
    return OKABE_ITO[(ordinal - 1) % len(OKABE_ITO)]


def run_colors(store: Any, run_ids: Sequence[str] | None = None) -> dict[str, str]:
    """run id -> colour for the given runs (default: all runs in the store)."""
    order = store.creation_order()
    ids = order if run_ids is None else run_ids
    return {run_id: color_for(order.get(run_id, 0)) for run_id in ids}


def label_colors(run_ids: Sequence[str], labels: Mapping[str, str], colors: Mapping[str, str]) -> dict[str, str]:
    """Display label -> colour for charts whose `run` column holds labels (ids in order)."""
    return {labels[run_id]: colors[run_id] for run_id in run_ids if run_id in labels and run_id in colors}


def swatch(color: str, title: str = "") -> str:
    """A coloured dot in HTML (for st.markdown(unsafe_allow_html=True)); `title` shows on hover."""
    safe = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return f'<span class="run-swatch" title="{safe}" style="color:{color}">&#9679;</span>'
