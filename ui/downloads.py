"""Download buttons. The engine builds every file (engine.runs.export); these only offer them.

Each button gets a callable, so the file is built when the user clicks, in Streamlit's own
thread, never on a page rerun (a model is megabytes; a history of many runs, thousands of rows).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any, Callable, Sequence

import streamlit as st

from engine.runs import export
from engine.core.errors import EngineError

HISTORY_HELP = ("One row per run, epoch and metric (long format: run_id, name, tags, status, seed, "
                "epochs_planned, epoch, metric, value); pandas reads it with read_csv and pivot.")
MODEL_HELP = ("A zip with config.json, the weights (model.pt: plain tensors, read with "
              "torch.load(weights_only=True), no code runs), class names and feature scaling; "
              "load it with engine.runs.export.load_bundle.")


def _or_error_zip(build: Callable[[], bytes]) -> Callable[[], bytes]:
    """`build`, except that an EngineError (the run was deleted meanwhile...) gives a zip with
    ERROR.txt saying so: the click runs outside the page, where no message can be shown."""

    def run() -> bytes:
        try:
            return build()
        except EngineError as exc:
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as zf:
                zf.writestr("ERROR.txt", f"The model could not be packed: {exc}\n")
            return out.getvalue()

    return run


def has_model(store: Any, record: Any) -> bool:
    """The run has saved weights (finished, or stopped after at least one epoch)."""
    return (store.runs_dir / record.id / "model.pt").is_file()


def run_downloads(store: Any, record: Any) -> None:
    """The Train page's run section: the run's model + configuration (when it has weights)
    and its per-epoch history (when it has epochs), side by side."""
    left, right = st.columns(2)
    if has_model(store, record):
        left.download_button("Download model + config (zip)", _or_error_zip(lambda: export.model_bundle(store, record.id)),
                             export.bundle_name(record.id), "application/zip", key=f"dl_model_{record.id}",
                             help=MODEL_HELP, on_click="ignore")
    if record.history:
        right.download_button("Download per-epoch history (CSV)", lambda: export.history_csv([record]),
                              f"history-{record.id}.csv", "text/csv", key=f"dl_history_{record.id}",
                              help=HISTORY_HELP, on_click="ignore")


def history_download(records: Sequence[Any], key: str = "dl_history") -> None:
    """One button: the per-epoch history of `records` (the runs shown) as a long CSV."""
    runs = list(records)
    which = "this run" if len(runs) == 1 else f"these {len(runs)} runs"
    st.download_button(f"Download per-epoch history of {which} (CSV)", lambda: export.history_csv(runs),
                       "history.csv", "text/csv", key=key, help=HISTORY_HELP, on_click="ignore",
                       disabled=not runs)
