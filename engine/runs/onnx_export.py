"""ONNX export (issue #27): a stored run's network as one ONNX file that runs anywhere
onnxruntime does (a server, a phone, a browser, a C++ plugin), without this code.

The graph takes the features exactly as `engine.features.extract.clip_features` returns them
(unscaled) and applies the run's standardiser itself, so a user cannot forget it or apply it
twice. It returns both:
  logits         (batch, classes) float32, the network's raw outputs;
  probabilities  (batch, classes) float32 = softmax(logits / T), T the temperature the run
                 fitted on validation (T = 1 for a run without one): what the engine's
                 Predictor reports (`Predictor.predict_features`, calibrated by default).
The batch is dynamic; so is the number of frames for the sequence models. The study models
flatten their frames into one time step, so their frame count is the run's (fixed).

The metadata (`metadata_props`) holds the class names (output order), the FeatureConfig and
ModelConfig as JSON, the standardiser (mean/std per feature), the temperature and how the
probabilities are calibrated, and `input_note`: how to compute the input (also the doc_string).

Exporter: torch's TorchScript exporter (`dynamo=False`). Measured with torch 2.13 on this
machine: it exports each architecture in about 0.2 s with a dynamic frame axis and needs no
package beyond `onnx`; the dynamo exporter needed onnxscript, took 1-11 s and fixed the
sequence models' frame count to the example's (ORT refused 136 frames after an export at
129). torch warns that the TorchScript exporter is deprecated; torch is pinned (2.13.0) and
tests/test_onnx.py checks the file against the torch model for every architecture.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..core.config import FeatureConfig, RunConfig
from ..core.errors import EngineError, StoreError
from ..predict.predictor import Predictor
from .export import check_outputs, class_names_of

OPSET = 17  # ONNX opset: 17 has LayerNormalization (the waveform model's frame projection)
INSTALL = "pip install -r requirements-onnx.txt"
INPUT_NAME, OUTPUT_NAMES = "features", ("logits", "probabilities")
SEQUENCE_ARCHS = ("sequence", "waveform", "linear")  # read frame by frame (or pool them): any number of frames
EXAMPLE_BATCH = 2  # the traced example's batch (not 1, which a tracer may treat as a constant)


class OnnxUnavailable(EngineError):
    """The optional `onnx` package is not installed; the message says how to install it."""


def require_onnx() -> Any:
    """The `onnx` module, or OnnxUnavailable saying how to install it (requirements-onnx.txt:
    onnx and onnxruntime, optional extras of this project)."""
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailable(f"ONNX export needs the optional packages onnx and onnxruntime: {INSTALL}") from None
    return onnx


def onnx_name(run_id: str) -> str:
    """The download's file name."""
    return f"medley-model-{run_id}.onnx"


class Exported(nn.Module):
    """What the ONNX graph computes: x (batch, frames, features) unscaled float32 ->
    (logits, softmax(logits / T)), both (batch, classes); the standardiser applied first."""

    def __init__(self, model: nn.Module, mean: np.ndarray | None, std: np.ndarray | None,
                 temperature: float | None) -> None:
        super().__init__()
        self.model = model
        self.scaled = mean is not None
        if self.scaled:
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))  # (features,)
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))  # (features,)
        self.temperature = float(temperature or 1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scaled:
            x = (x - self.mean) / self.std  # as Predictor.logits_features
        logits = self.model(x)  # (batch, classes)
        return logits, torch.softmax(logits / self.temperature, dim=1)  # as Predictor.probabilities


def input_note(features: FeatureConfig, arch: str, scaled: bool) -> str:
    """How to compute the graph's input, in words (the ONNX doc_string and metadata "input_note")."""
    f = features
    if f.representation == "waveform":
        what = f"the raw waveform cut into non-overlapping frames of {f.waveform_frame} samples"
    else:
        base = ("13 MFCC + 1 spectral centroid (Hz) + 7 spectral-contrast bands (dB) = 21 values"
                if f.representation == "spectral" else "128 slaney mel-band energies in dB (top_db 80)")
        base = base.replace("13 MFCC", f"{f.n_mfcc} MFCC")
        what = (f"per STFT frame (n_fft {f.n_fft}, hop {f.hop_length}, centred, {f.pad_mode} padding, as "
                f"{f.inputs.replace('_', ' ')} computes them) {base}" + (", then 12 chroma values" if f.chroma else "")
                + (", then the first-order deltas of all of these" if f.deltas else ""))
    frames = (f"any number of frames (trained on {f.num_frames})" if arch in SEQUENCE_ARCHS
              else f"exactly {f.num_frames} frames")
    return (f"Input '{INPUT_NAME}': float32 (batch, frames, {f.feature_dim}), {frames}, of mono clips of "
            f"{f.clip_samples} samples at {f.sample_rate} Hz: {what}; the first {f.num_frames} frames kept"
            + ("; each clip then normalised per feature over its frames (CMVN)" if f.clip_norm else "")
            + ". engine.features.extract.clip_features(y, FeatureConfig(**json.loads(metadata['features']))) "
            "computes exactly this. " + ("Do NOT standardise: the graph applies the run's standardiser "
            "(metadata 'standardizer') itself." if scaled else "The run used no standardiser: feed the values "
            "as they are.") + " Outputs: 'logits' (batch, classes) and 'probabilities' = softmax(logits / T), "
            "T = metadata 'temperature'; classes in metadata 'class_names' order.")


def store_predictor(store: Any, run_id: str) -> tuple[Predictor, dict]:
    """The run's Predictor (the selected epoch's weights, as the bundle holds them) and its
    meta.json; StoreError when the run has no saved model or its class list does not fit."""
    meta = store.load_meta(run_id)
    names = class_names_of(meta)
    state = store.load_state_dict(run_id)
    check_outputs(state, names, f"run '{run_id}'")
    try:
        config = RunConfig.from_dict(meta["config"])
        predictor = Predictor(config, state, meta.get("standardizer"), names, run_id, store.get(run_id).metrics)
    except (KeyError, RuntimeError) as exc:
        raise StoreError(f"run '{run_id}': the stored model does not match its configuration: {exc}") from None
    return predictor, meta


def model_onnx(store: Any, run_id: str) -> bytes:
    """The ONNX file of a stored run (see the module docstring); OnnxUnavailable without the
    `onnx` package, StoreError when the run has no saved model."""
    onnx = require_onnx()
    predictor, meta = store_predictor(store, run_id)
    record = store.get(run_id)
    info = {"run_id": run_id, "name": record.name, "best_epoch": meta.get("best_epoch"),
            "calibration": predictor.calibration, "temperature": predictor.temperature}
    return predictor_onnx(onnx, predictor, info)


def predictor_onnx(onnx: Any, predictor: Predictor, info: dict[str, Any]) -> bytes:
    """Export `predictor`'s network (float32, eval mode) with its standardiser and temperature;
    `info`: run_id, name, best_epoch, calibration (words), temperature (or None). The predictor
    is left as it was (its model in eval mode, the same weights)."""
    config = predictor.config
    f, arch = config.features, config.model.arch
    # eval() on the wrapper too: the exporter puts the module back in the mode it found it in,
    # and a new module is in training mode, which would switch the predictor's dropout back on.
    wrapper = Exported(predictor.model, predictor.mean, predictor.std, info.get("temperature")).eval()
    example = torch.zeros(EXAMPLE_BATCH, f.num_frames, f.feature_dim)  # (batch, frames, features)
    axes = {INPUT_NAME: {0: "batch", 1: "frames"} if arch in SEQUENCE_ARCHS else {0: "batch"},
            **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    out = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and its tracer warnings (nn.LSTM's own
        # checks) are not the user's business: the graph is checked against torch at other
        # batch sizes and frame counts in tests/test_onnx.py.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), out, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    model = onnx.load_from_string(out.getvalue())
    note = input_note(f, arch, predictor.mean is not None)
    model.doc_string = note
    model.producer_name, model.model_version = "medley-lstm-lab", 1
    onnx.helper.set_model_props(model, metadata(predictor, info, note))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def metadata(predictor: Predictor, info: dict[str, Any], note: str) -> dict[str, str]:
    """The ONNX metadata_props (text only): JSON for lists and objects."""
    config, scaled = predictor.config, predictor.mean is not None
    standardizer = {"mean": predictor.mean.tolist(), "std": predictor.std.tolist()} if scaled else None
    temperature = info.get("temperature")
    return {
        "class_names": json.dumps(list(predictor.class_names)),
        "features": json.dumps(config.to_dict()["features"]),
        "model": json.dumps(config.to_dict()["model"]),
        "standardizer": json.dumps(standardizer),
        "standardized_in_graph": json.dumps(scaled),
        "temperature": json.dumps(float(temperature) if temperature else 1.0),
        "calibration": str(info.get("calibration") or ""),
        "input_note": note,
        "outputs": "logits (batch, classes); probabilities (batch, classes) = softmax(logits / temperature)",
        "run_id": str(info.get("run_id") or ""),
        "name": str(info.get("name") or ""),
        "best_epoch": json.dumps(info.get("best_epoch")),
        "precision": "float32" + (" (the run trained in bfloat16: the engine predicts in bfloat16, so its "
                                  "probabilities may differ by bfloat16 rounding)"
                                  if config.train.precision == "bfloat16" else ""),
    }
