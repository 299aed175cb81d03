"""ONNX export (issue #27): the time to export a run's network, and inference time per clip in
onnxruntime against the engine's torch Predictor, measured in the same run, for the study
model (3 frames) and the recommended sequence model (129 frames).

The networks have the presets' shapes with their initial weights (inference costs the same
whatever the weights); both sides get the same unscaled features and a standardiser, and the
probabilities are checked to agree within 1e-4 (tests/test_onnx.py says why). Threads: torch
and onnxruntime both at 1 (the machine is shared), so the ratio compares kernels, not cores.

    python benchmarks/onnx_export.py               # batches of 1 and 64 clips, 20 repeats
    python benchmarks/onnx_export.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.core.labels import CLASS_NAMES  # noqa: E402
from engine.learn.model import build_model  # noqa: E402
from engine.learn.presets import RECOMMENDED, STUDY_BASE  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.runs.onnx_export import predictor_onnx, require_onnx  # noqa: E402


def per_clip_ms(run, x: np.ndarray, repeats: int) -> float:
    """Median ms per clip of `run(x)` over `repeats` calls (after one warm-up call)."""
    run(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch

    onnx = require_onnx()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    rng = np.random.default_rng(0)
    ratios = []
    for name, config in (("study", STUDY_BASE), ("recommended", RECOMMENDED)):
        f = config.features
        state = build_model(config.model, f).state_dict()
        scale = {"mean": rng.standard_normal(f.feature_dim).tolist(), "std": (1 + rng.random(f.feature_dim)).tolist()}
        predictor = Predictor(config, state, scale, CLASS_NAMES)
        start = time.perf_counter()
        raw = predictor_onnx(onnx, predictor, {"temperature": 1.5})
        export_s = time.perf_counter() - start
        session = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
        predictor.temperature = 1.5
        print(f"{name} ({config.model.arch}, {f.num_frames} frames x {f.feature_dim}), {len(raw) / 1e6:.1f} MB of ONNX")
        print(f"  {name} export (s): {export_s:.2f}")
        for batch in (int(b) for b in args.batches.split(",")):
            x = rng.standard_normal((batch, f.num_frames, f.feature_dim)).astype(np.float32)
            got = session.run(["probabilities"], {"features": x})[0]
            assert np.abs(got - predictor.predict_features(x)).max() < 1e-4, "ONNX and torch disagree"
            torch_ms = per_clip_ms(predictor.predict_features, x, args.repeats)
            ort_ms = per_clip_ms(lambda v: session.run(["probabilities"], {"features": v}), x, args.repeats)
            ratios.append(torch_ms / ort_ms)
            print(f"  batch {batch:>3}: torch {torch_ms:8.3f} ms/clip, onnxruntime {ort_ms:8.3f} ms/clip, "
                  f"torch / onnxruntime {torch_ms / ort_ms:.2f}x")
    print(f"torch / onnxruntime per clip (geometric mean): {float(np.exp(np.mean(np.log(ratios)))):.2f}x")


if __name__ == "__main__":
    main()
