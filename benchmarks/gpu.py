"""One command proves the GPU path: the CUDA tests, then one table of GPU figures.

    benchmarks/gpu_check.sh            # = python benchmarks/gpu.py; about 5 minutes on one GPU
    python benchmarks/gpu.py --device cpu --quick   # the same code on CPU, tiny sizes (CI runs it)

On a machine whose torch sees no CUDA device it says so and exits 0 (nothing to prove). It
installs nothing and downloads nothing: its data is synthetic (clips of tones and noise,
feature arrays shaped like the real splits). Steps, each timed in the same run as its
reference:
1. the CUDA tests (`pytest -k cuda`: spectral features, LSTM precision, resume, concurrent
   runs, grouped seeds; all skipped on a machine without CUDA);
2. features of N clips on the device vs on the CPU (`batch_spectral_features`);
3. one 50-epoch run of the study base configuration;
4. 4 concurrent runs (threads, as the job manager runs them) vs 1: throughput ratio;
5. 8 seeds trained as one group vs one after another;
6. float32 vs bfloat16 for the study model and the whole-clip sequence model.
Exit status 1 when the tests fail (the table is still printed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from seeds import grouped_epochs, sequential_epochs  # noqa: E402
from training import run_config, synthetic  # noqa: E402

from engine.core.config import FeatureConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from engine.features.spectral import batch_spectral_features  # noqa: E402
from engine.learn.train import train_run  # noqa: E402

CUDA_TESTS = ["tests/test_spectral.py", "tests/test_model.py", "tests/test_train.py", "tests/test_batched.py"]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    """Wall seconds of fn(), the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def clips(n: int, samples: int = 65536, sr: int = 22050) -> np.ndarray:
    """n clips (n, samples) float32: a few harmonics of a random pitch plus a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / sr
    f0 = rng.uniform(110, 880, (n, 1))
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
    return (0.3 * tone + 0.01 * rng.normal(size=(n, samples))).astype(np.float32)


def features_row(device: str, n: int) -> tuple[str, str]:
    audio = clips(n)
    config = FeatureConfig()
    batch_spectral_features(audio[:2], config, device=device)  # warm-up (tables, kernels)
    ours = min(timed(lambda: batch_spectral_features(audio, config, device=device), device) for _ in range(2))
    cpu = min(timed(lambda: batch_spectral_features(audio, config, device="cpu"), "cpu") for _ in range(2))
    return f"features of {n} clips", f"{device} {ours:.2f} s, cpu {cpu:.2f} s: {cpu / ours:.1f}x"


def study_row(device: str, data: dict, epochs: int) -> tuple[str, str]:
    result = None

    def run() -> None:
        nonlocal result
        result = train_run(run_config(epochs), data, device=device)
    seconds = timed(run, device)
    return (f"study base, {epochs} epochs",
            f"{seconds:.1f} s ({seconds / epochs:.3f} s/epoch), val acc {result.history[-1]['val_accuracy']:.3f}")


def concurrent_row(device: str, data: dict, epochs: int, runs: int) -> tuple[str, str]:
    config = run_config(epochs)
    one = timed(lambda: train_run(config, data, device=device), device)

    def together() -> None:
        threads = [threading.Thread(target=train_run, args=(config.with_values(**{"train.seed": s}), data),
                                    kwargs={"device": device}) for s in range(runs)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    many = timed(together, device)
    return (f"{runs} concurrent runs vs 1 ({epochs} epochs)",
            f"1: {one:.1f} s, {runs}: {many:.1f} s: throughput {runs * one / many:.2f}x")


def seeds_row(device: str, data: dict, seeds: int, epochs: int) -> tuple[str, str]:
    configs = [run_config(epochs).with_values(**{"train.seed": s}) for s in range(seeds)]
    sequential = float(np.median(sequential_epochs(data, configs, device)[0]))
    grouped = float(np.median(grouped_epochs(data, configs, device)[0]))
    return (f"{seeds} seeds grouped vs sequential",
            f"{sequential:.3f} vs {grouped:.3f} s per epoch of all: {sequential / grouped:.2f}x")


def precision_rows(device: str, data: dict, sequence_data: dict, epochs: int) -> list[tuple[str, str]]:
    rows = []
    for name, base, d in (("study", run_config(epochs), data), ("sequence", sequence_config(epochs), sequence_data)):
        seconds = {}
        for precision in ("float32", "bfloat16"):
            config = base.with_values(**{"train.precision": precision})
            seconds[precision] = timed(lambda: train_run(config, d, device=device), device) / epochs
        rows.append((f"{name}: float32 vs bfloat16",
                     f"{seconds['float32']:.3f} vs {seconds['bfloat16']:.3f} s/epoch: "
                     f"{seconds['float32'] / seconds['bfloat16']:.2f}x"))
    return rows


def sequence_config(epochs: int) -> RunConfig:
    return RunConfig(features=FeatureConfig(frames=None),
                     model=ModelConfig(arch="sequence", hidden_size=128, num_layers=2, dropout=0.1, pooling="mean"),
                     train=TrainConfig(lr=1e-3, batch_size=100, epochs=epochs, standardize=True))


def sequence_data(n: int, frames: int) -> dict:
    def split(count: int, seed: int):
        s = synthetic(count, seed)
        x = np.repeat(s.x[:, :1], frames, axis=1) + np.random.default_rng(seed).normal(0, 5, (count, frames, 21))
        return type(s)(x.astype(np.float32), s.y, s.ids)
    return {"training": split(n, 0), "validation": split(max(n // 3, 8), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a check of the code path, not figures)")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}, cuda build: {torch.version.cuda}): "
              f"nothing to check here; run this on a machine with a GPU")
        return 0
    q = args.quick
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}), torch {torch.__version__}", flush=True)
    status = 0
    if not args.skip_tests:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", *CUDA_TESTS], cwd=ROOT)
        status = 0 if tests.returncode in (0, 5) else 1  # 5: none collected (no CUDA)
        print(f"CUDA tests: {'passed' if status == 0 else 'FAILED'}", flush=True)
    data = {"training": synthetic(400 if q else 5841, 0), "validation": synthetic(200 if q else 3494, 1)}
    rows = [features_row(args.device, 4 if q else 1000)]
    rows.append(study_row(args.device, data, 2 if q else 50))
    rows.append(concurrent_row(args.device, data, 2 if q else 10, 2 if q else 4))
    rows.append(seeds_row(args.device, data, 2 if q else 8, 2 if q else 4))
    rows += precision_rows(args.device, data, sequence_data(100 if q else 2000, 16 if q else 129), 1 if q else 3)
    width = max(len(r[0]) for r in rows)
    print("\n" + "\n".join(f"{label:<{width}}  {value}" for label, value in rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
