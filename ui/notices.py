"""Messages that outlive a rerun: set in one script run (just before st.rerun()), shown once
at the top of the next page run (ui.common.render_sidebar calls `show`)."""

from __future__ import annotations

import time

import streamlit as st

KEY = "notices"


def remember(text: str) -> None:
    """Keep `text` (Markdown) for the next `show`."""
    st.session_state.setdefault(KEY, []).append(text)


def show() -> None:
    """Show the remembered messages as st.success, once."""
    for text in st.session_state.pop(KEY, []):
        st.success(text)


def demo_ready(clips: int, seconds: float) -> str:
    """'Demo data ready: 1,120 clips in 95 s.'"""
    return f"Demo data ready: {clips:,} clips in {seconds:.0f} s."


def timer() -> float:
    """A monotonic clock (seconds), for `demo_ready`."""
    return time.monotonic()
