"""One colour per run, the same on every chart of every page, whatever else is selected.

A run's colour comes from its creation order in the store (`RunStore.creation_order()`):
hues step by the golden angle (137.5 degrees), so runs created one after another (an
ablation, a seed group) get clearly different hues, and lightness alternates between two
levels so that hues that do come close apart still differ. No streamlit in here.
"""

from __future__ import annotations

import colorsys
from typing import Any, Mapping, Sequence

GOLDEN_ANGLE = 137.50776405


def color_for(ordinal: int) -> str:
    """'#rrggbb' for the run created `ordinal`-th (1-based; any integer works)."""
    hue = (ordinal * GOLDEN_ANGLE + 210.0) % 360.0 / 360.0
    lightness = 0.42 if ordinal % 2 else 0.56
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.70)
    return "#{:02x}{:02x}{:02x}".format(round(r * 255), round(g * 255), round(b * 255))


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
