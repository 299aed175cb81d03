"""Download buttons. The engine builds every file (engine.runs.export); these only offer them.

Each button gets a callable, so the file is built when the user clicks, in Streamlit's own
thread, never on a page rerun (a model is megabytes; a history of many runs, thousands of rows).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any, Callable, Sequence

import streamlit as st

from engine.runs import export, onnx_export
from engine.core.errors import EngineError

HISTORY_HELP = ("One row per run, epoch and metric (long format: run_id, name, tags, status, seed, "
                "epochs_planned, epoch, metric, value); pandas reads it with read_csv and pivot.")
MODEL_HELP = ("A zip with config.json, the weights (model.pt: plain tensors, read with "
              "torch.load(weights_only=True), no code runs), class names and feature scaling; "
              "load it with engine.runs.export.load_bundle.")
ONNX_HELP = ("The trained network as ONNX (opset 17, any batch size): input the clip's features unscaled "
             "(batch, frames, features), outputs logits and calibrated probabilities; class names, feature "
             "settings, standardiser and temperature are in its metadata. Runs with onnxruntime, without "
             "this code (docs/GUIDE.md, 'Take the model elsewhere').")


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


def _or_error_text(build: Callable[[], bytes], what: str) -> Callable[[], bytes]:
    """`build`, except that an EngineError gives a short text file saying why `what` could not
    be written (as `_or_error_zip`, for files that are not zips)."""

    def run() -> bytes:
        try:
            return build()
        except EngineError as exc:
            return f"{what} could not be written: {exc}\n".encode()

    return run


def onnx_download(store: Any, record: Any, where: Any) -> None:
    """The run's ONNX model as a download in `where` (a column); without the optional onnx
    package, a line saying how to install it instead of the button."""
    try:
        onnx_export.require_onnx()
    except onnx_export.OnnxUnavailable as exc:
        where.caption(f"{exc}")
        return
    where.download_button("Download model (ONNX)", _or_error_text(lambda: onnx_export.model_onnx(store, record.id),
                                                                  "The ONNX model"),
                          onnx_export.onnx_name(record.id), "application/octet-stream", key=f"dl_onnx_{record.id}",
                          help=ONNX_HELP, on_click="ignore")


def has_model(store: Any, record: Any) -> bool:
    """The run has saved weights (finished, or stopped after at least one epoch)."""
    return (store.runs_dir / record.id / "model.pt").is_file()


def run_downloads(store: Any, record: Any) -> None:
    """The Train page's run section: the run's model + configuration and its ONNX form (when
    it has weights) and its per-epoch history (when it has epochs), side by side."""
    left, right = st.columns(2)
    if has_model(store, record):
        left.download_button("Download model + config (zip)", _or_error_zip(lambda: export.model_bundle(store, record.id)),
                             export.bundle_name(record.id), "application/zip", key=f"dl_model_{record.id}",
                             help=MODEL_HELP, on_click="ignore")
        onnx_download(store, record, left)
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
