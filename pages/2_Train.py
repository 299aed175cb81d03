"""Train: the configuration form (only the inputs that apply; defaults = the study's base) and
Start; then the run itself at the top of the page: live progress and charts, then its results
(one headline figure, the rest in a table, curves, per class, confusion matrices). "Train
another run" brings the form back."""

from __future__ import annotations

import html

import streamlit as st

from engine.core.errors import EngineError
from engine.runs.naming import preset_run_name
from engine.learn.presets import PRESETS
from engine.runs.store import ACTIVE
from ui import run_view
from ui import train_form as form
from ui.colors import run_colors, swatch
from ui.common import data_setting, get_manager, get_store, plain, render_sidebar, run_label

st.set_page_config(page_title="Train · Medley LSTM lab", page_icon="🎻", layout="wide")
render_sidebar()
st.title("Train")

store = get_store()
data = data_setting()
if "train_flash" in st.session_state:
    st.success(st.session_state.pop("train_flash"))
recent = store.list_runs(limit=30)
labels = {r.id: run_label(r) for r in recent}  # "name (id)": no status, which changes, since the URL holds it
run_id = run_view.current_run(labels)
showing_run = run_id is not None  # a run chosen (Start, the picker, a link) takes the page

# ---- the form: until a run is shown (after Start, or a run opened), then behind "Train another run"
if not showing_run:
    st.caption("Set the configuration and press **Start training**; the run then takes the page.")
    name, start = form.render_form(PRESETS, data)
    if start:
        preset = st.session_state["preset"]
        try:
            config = form.config_from_form(st.session_state[form.FORM], PRESETS[preset], data)
            new_id = get_manager().submit(config, name=name.strip() or preset_run_name(config, PRESETS[preset], preset),
                                          tags=("train-page",))
        except EngineError as exc:
            st.error(f"Cannot start: {plain(exc)}")
        else:
            run_view.select_run(new_id)
            st.rerun()
    st.divider()
    st.caption("Or look at an earlier run:" if recent else "Its progress and results appear here.")

# ---- which run -------------------------------------------------------------------------
# drawn even before the first run: Streamlit writes a value set from code (Start's run) to the
# URL only for a URL-bound widget that the previous script run drew
run_id = run_view.run_picker(run_id, recent, labels, train_another=showing_run)
if run_id is None:
    st.stop()
try:
    record = store.get(run_id)
except EngineError as exc:
    st.error(plain(exc))
    st.stop()

color = run_colors(store, [run_id])[run_id]  # the run's colour on every page (ui.colors)
# plain() keeps a name from becoming Markdown (a link, an image the browser would fetch), html.escape from HTML
st.markdown(f"### {swatch(color, record.name)} Run {plain(html.escape(run_label(record)))}", unsafe_allow_html=True)
if record.notes:
    st.caption(f"Notes: {plain(record.notes)}")
if record.status in ACTIVE:
    run_view.live(store, record, color)
else:
    run_view.results(store, record, color)
run_view.manage(store, record)
