"""Seconds per epoch: this engine's `train_run` vs a loop written the way the study wrote it.

The study's base configuration (arch "study", 3 frames x 21 features, hidden 500, 2 layers,
dropout 0.1, batch 100, Adam lr 1e-4) on synthetic data shaped like the real splits
(training 5,841 clips, validation 3,494). Both loops train the same model from the same
initial weights on the same arrays; the engine validates after every epoch, the reference
once after its last epoch, as the study did. (The engine's study model
is the same nn.LSTM, evaluated without the recurrent products that a zero initial state makes 0.) Each loop runs in its
own subprocess so that peak memory (RSS, or CUDA allocations) is its own.

    python benchmarks/training.py                 # CPU: 3 repeats x 4 epochs per side, ~2 min
    python benchmarks/training.py --device cuda --epochs 10

The engine runs twice: in float32 (the default, the headline `speedup:`) and with
`precision="bfloat16"` (mixed precision: matrix products in bfloat16), reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.core.config import FeatureConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from engine.learn.model import build_model  # noqa: E402
from engine.learn.train import TrainHooks, train_run  # noqa: E402


@dataclass
class Split:  # the fields of engine.features.extract.FeatureSet
    x: np.ndarray  # (n, 3, 21) float32
    y: np.ndarray  # (n,) int64
    ids: list[str]


def synthetic(n: int, seed: int) -> Split:
    """n clips of MFCC-like values (large, unscaled, as the study fed them) with class-dependent means."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    x = rng.normal(0, 20, (n, 3, 21)) + 10 * y[:, None, None] * np.linspace(-1, 1, 21)
    return Split(x.astype(np.float32), y.astype(np.int64), [str(i) for i in range(n)])


def run_config(epochs: int, precision: str = "float32") -> RunConfig:
    return RunConfig(model=ModelConfig(arch="study", hidden_size=500, num_layers=2, dropout=0.1),
                     features=FeatureConfig(frames=3),
                     train=TrainConfig(optimizer="adam", lr=1e-4, batch_size=100, epochs=epochs, seed=0,
                                       precision=precision))


def clocks() -> tuple[float, float]:
    """(wall, CPU seconds of this process): CPU time is steadier on a shared machine."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def engine_epochs(data: dict[str, Split], config: RunConfig, device: str) -> tuple[list[tuple], float]:
    """This engine: (wall, CPU) seconds of each epoch and the final validation accuracy.

    Epoch 1 includes the engine's setup (data to the device, model build)."""
    marks = [clocks()]
    result = train_run(config, data, device=device, hooks=TrainHooks(on_epoch=lambda record, ckpt: marks.append(clocks())))
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])], result.history[-1]["val_accuracy"]


class StudyDataset(Dataset):
    """As the study: one dict per item with a numpy array and an int."""

    def __init__(self, split: Split) -> None:
        self.x, self.y = split.x, split.y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.x[i], "label": int(self.y[i])}


class StudyNet(nn.Module):
    """The study's network as it wrote it: nn.LSTM over a one-step sequence, linear head on its output."""

    def __init__(self, inputs: int = 63, hidden: int = 500, layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.view(x.shape[0], 1, -1))  # (batch, 1, hidden)
        return self.head(out[:, -1])


def reference_epochs(data: dict[str, Split], config: RunConfig, device: str) -> tuple[list[tuple], float]:
    """The study's loop: DataLoader of dicts, per-step type conversions, loss.item() printed every
    10 steps, validation once after the last epoch (as the study did; timed with that epoch)."""
    torch.manual_seed(config.train.seed)
    m = config.model
    model = StudyNet(config.features.num_frames * config.features.feature_dim, m.hidden_size, m.num_layers, m.dropout)
    model.load_state_dict(build_model(m, config.features).state_dict())  # the engine's initial weights
    model = model.to(device)
    torch.manual_seed(config.train.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    criterion = nn.CrossEntropyLoss()
    train_loader = DataLoader(StudyDataset(data["training"]), batch_size=config.train.batch_size, shuffle=True)
    val_loader = DataLoader(StudyDataset(data["validation"]), batch_size=config.train.batch_size)
    log = open(os.devnull, "w")
    times, accuracy = [], 0.0
    for epoch in range(config.train.epochs):
        start = clocks()
        model.train()
        for i, batch in enumerate(train_loader):
            audio = batch["audio"].type(torch.FloatTensor).to(device)
            label = batch["label"].type(torch.LongTensor).to(device)
            model.zero_grad()
            loss = criterion(model(audio), label)
            loss.backward()
            optimizer.step()
            if i % 10 == 0:
                print(f"epoch {epoch} step {i} loss {loss.item()}", file=log)
        if epoch + 1 < config.train.epochs:
            end = clocks()
            times.append((end[0] - start[0], end[1] - start[1]))
            continue
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in val_loader:
                audio = batch["audio"].type(torch.FloatTensor).to(device)
                label = batch["label"].type(torch.LongTensor).to(device)
                correct += (model(audio).argmax(1) == label).sum().item()
                total += len(label)
        accuracy = correct / total
        end = clocks()
        times.append((end[0] - start[0], end[1] - start[1]))
    return times, accuracy


def measure(which: str, args: argparse.Namespace) -> dict:
    """Run one loop in this process; per-epoch seconds, accuracy and peak memory (MiB)."""
    data = {"training": synthetic(args.clips, 0), "validation": synthetic(args.val_clips, 1)}
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    loop = reference_epochs if which == "reference" else engine_epochs
    precision = "bfloat16" if which == "engine-bf16" else "float32"
    times, accuracy = loop(data, run_config(args.epochs, precision), args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"which": which, "epoch_seconds": [t[0] for t in times], "epoch_cpu_seconds": [t[1] for t in times], "val_accuracy": accuracy, "peak_mib": peak}


SIDES = ("reference", "engine", "engine-bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=5841, help="training clips (real split: 5,841)")
    parser.add_argument("--val-clips", type=int, default=3494, help="validation clips (real split: 3,494)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loop and repeat (the first is setup, left out)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per side, interleaved")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first epoch of each process is setup) and --repeats at least 1")
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clips} training clips, "
          f"{args.val_clips} validation clips, {args.repeats} x {args.epochs} epochs each")
    wall: dict[str, list[float]] = {w: [] for w in SIDES}  # epoch seconds, first epoch of each process left out
    cpu: dict[str, list[float]] = {w: [] for w in SIDES}
    last: dict[str, dict] = {}
    for repeat in range(args.repeats):  # sides interleaved, so that a slow spell of the machine hits all of them
        for which in SIDES:
            command = [sys.executable, __file__, "--only", which, "--clips", str(args.clips),
                       "--val-clips", str(args.val_clips), "--epochs", str(args.epochs), "--device", args.device]
            out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            wall[which] += out["epoch_seconds"][1:]
            cpu[which] += out["epoch_cpu_seconds"][1:]
            last[which] = {**out, "peak_mib": max(out["peak_mib"], last.get(which, {}).get("peak_mib", 0.0))}
    medians = {w: float(np.median(wall[w])) for w in SIDES}
    cpu_medians = {w: float(np.median(cpu[w])) for w in SIDES}
    for which in SIDES:
        quartiles = np.percentile(wall[which], [25, 75])
        print(f"{which:11s}  median {medians[which]:.3f} s/epoch wall (quartiles {quartiles[0]:.3f}-{quartiles[1]:.3f}, "
              f"{len(wall[which])} epochs), {cpu_medians[which]:.3f} s CPU  val acc {last[which]['val_accuracy']:.3f}  "
              f"peak {'GPU' if args.device.startswith('cuda') else 'RSS'} {last[which]['peak_mib']:.0f} MiB")
    print(f"CPU-time ratio: {cpu_medians['reference'] / cpu_medians['engine']:.2f}x (float32), "
          f"{cpu_medians['reference'] / cpu_medians['engine-bf16']:.2f}x (bfloat16)")
    print(f"bfloat16 mixed precision: {medians['reference'] / medians['engine-bf16']:.2f}x the reference, "
          f"{medians['engine'] / medians['engine-bf16']:.2f}x float32")
    print(f"speedup: {medians['reference'] / medians['engine']:.2f}x")


if __name__ == "__main__":
    main()
