"""Making the demo from the dashboard ends with a success message that survives the rerun."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def test_make_demo_data_says_when_it_is_ready(medley_cache, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
        at.query_params["data"] = "demo:tiny"
        at.run()
        assert not at.exception and not at.success
        next(b for b in at.button if b.label == "Make demo data").click().run()
        assert not at.exception, at.exception
        assert len(at.success) == 1 and at.success[0].value.startswith("Demo data ready: ")
        # the total agrees with the progress bar's "of N clips", and says where the clips went
        note = at.success[0].value
        assert "96 in training, validation and test" in note and "cross-collection program view" in note
        from engine.data.dataset import load_dataset
        from ui.common import data_setting  # noqa: F401
        from engine.core import paths
        ds = load_dataset(paths.demo_root("tiny"), check_audio=False)
        assert note.startswith(f"Demo data ready: {len(ds.clips) + len(ds.program_view):,} clips rendered in ")
        at.run()
        assert not at.success  # once
    finally:
        st.cache_resource.clear()
