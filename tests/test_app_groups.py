"""The dashboard's ablation button queues its rows at once, so that rows which can train
together do, in the dashboard's worker process (JobManager(isolation="process"))."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def test_the_study_ablation_button_trains_its_seed_and_lr_rows_as_one_group(tiny_dataset, medley_cache,
                                                                             monkeypatch) -> None:
    from engine.learn import batched

    monkeypatch.setenv("MEDLEY_DATA", str(tiny_dataset))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
        at.run()
        at.number_input(key="ablation_epochs").set_value(1)
        next(b for b in at.button if b.label == "Run the study's ablation").click().run()
        assert not at.exception, at.exception
        from ui.common import get_manager, get_store

        store = get_store()
        runs = store.list_runs()
        assert len(runs) == 10
        deadline = time.monotonic() + 600
        while any(store.get(r.id).status in ("queued", "running") for r in runs):
            assert time.monotonic() < deadline, "the ablation did not finish in time"
            time.sleep(1)
        grouped = {r.name: store.load_meta(r.id).get("trained_in_group") for r in runs
                   if store.get(r.id).status == "finished"}
        assert len(grouped) == 10, [(r.name, store.get(r.id).status, store.get(r.id).error) for r in runs]
        together = sorted(name for name, group in grouped.items() if group)
        expected = sorted(r.name for r in runs if batched.group_key(r.config) == batched.group_key(runs[-1].config))
        assert len(together) == 5 and together == expected  # base, lr 1e-3 / 1e-5, dropout 0.05 / 0.5
        assert {grouped[name]["size"] for name in together} == {5}
        get_manager().shutdown()
    finally:
        st.cache_resource.clear()
