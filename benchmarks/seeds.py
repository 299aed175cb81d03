"""Seed repeats: N seeds trained as one stacked model (`engine.learn.batched.train_group`) against
the same N trained one after another (`train_run`), in one run, same epochs, same clips.

The study's base configuration (benchmarks/training.py: arch "study", 3 frames x 21
features, hidden 500, 2 layers, dropout 0.1, batch 100, Adam lr 1e-4, validation every
epoch) on synthetic data shaped like the real splits. Sides alternate (sequential, grouped,
sequential, ...) so that load from other processes on a shared machine hits both. An
epoch's time: grouped, from one member's epoch end to the next; sequential, the sum over
the N runs of their epoch k. The first epoch of every run (setup) is left out; medians.

Then the whole-clip sequence model (arch "sequence", 129 frames x 21, hidden 128, 2 layers,
batch 100): nn.LSTM has no batched-weights kernel, so the grouped alternative is an LSTM
with stacked weights written as one `baddbmm` per frame; measured here against N separate
nn.LSTM training steps, forward + backward + Adam, on the same batches.

    python benchmarks/seeds.py                   # CPU: 5 seeds, 2 repeats x 3 epochs, ~5 min on 2 cores
    python benchmarks/seeds.py --device cuda --seeds 8
    python benchmarks/seeds.py --precision bfloat16   # both sides in mixed precision

The last line is `speedup: <ratio>x` (study model, sequential / grouped, median epoch wall time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import clocks, run_config, synthetic  # noqa: E402

from engine.learn.batched import train_group  # noqa: E402
from engine.learn.train import TrainHooks, train_run  # noqa: E402


def sequential_epochs(data: dict, configs: list, device: str) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of each epoch summed over the runs trained one after another (epoch 1 left out)."""
    wall, cpu = np.zeros(configs[0].train.epochs - 1), np.zeros(configs[0].train.epochs - 1)
    for config in configs:
        marks = [clocks()]
        train_run(config, data, device=device, hooks=TrainHooks(on_epoch=lambda record, ckpt: marks.append(clocks())))
        wall += [b[0] - a[0] for a, b in zip(marks[1:], marks[2:])]
        cpu += [b[1] - a[1] for a, b in zip(marks[1:], marks[2:])]
    return wall.tolist(), cpu.tolist()


def grouped_epochs(data: dict, configs: list, device: str) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of each epoch of the group (epoch 1 left out)."""
    marks = [clocks()]
    hooks = [TrainHooks(on_epoch=lambda record, ckpt: marks.append(clocks()))] + [None] * (len(configs) - 1)
    train_group(configs, data, device=device, hooks=hooks)
    return ([b[0] - a[0] for a, b in zip(marks[1:], marks[2:])], [b[1] - a[1] for a, b in zip(marks[1:], marks[2:])])


class GroupedLSTM(nn.Module):
    """G single-direction LSTMs with stacked weights: x (G, batch, frames, inputs) -> mean over
    frames of the last layer's h (G, batch, hidden), one `baddbmm` per frame and layer."""

    def __init__(self, groups: int, inputs: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.hidden = hidden
        sizes = [inputs] + [hidden] * (layers - 1)
        scale = hidden ** -0.5
        self.w_ih = nn.ParameterList([nn.Parameter(torch.empty(groups, n, 4 * hidden).uniform_(-scale, scale)) for n in sizes])
        self.w_hh = nn.ParameterList([nn.Parameter(torch.empty(groups, hidden, 4 * hidden).uniform_(-scale, scale)) for _ in sizes])
        self.bias = nn.ParameterList([nn.Parameter(torch.zeros(groups, 1, 4 * hidden)) for _ in sizes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, b, frames, _ = x.shape
        for w_ih, w_hh, bias in zip(self.w_ih, self.w_hh, self.bias):
            pre = torch.baddbmm(bias, x.reshape(g, b * frames, -1), w_ih).view(g, b, frames, -1)  # all frames at once
            h = c = x.new_zeros(g, b, self.hidden)
            outs = []
            for t in range(frames):
                gates = torch.baddbmm(pre[:, :, t], h, w_hh)  # (G, batch, 4*hidden)
                i, f, gg, o = gates.chunk(4, dim=2)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs, dim=2)  # (G, batch, frames, hidden)
        return x.mean(dim=2)


def sequence_steps(groups: int, steps: int, device: str) -> tuple[float, float]:
    """Median seconds of one training step for `groups` runs of the whole-clip sequence model:
    (one after another with nn.LSTM, grouped-weight LSTM)."""
    frames, inputs, hidden, batch = 129, 21, 128, 100
    x = torch.randn(groups, batch, frames, inputs, device=device)
    y = torch.randint(0, 8, (groups, batch), device=device)
    lone = [(nn.LSTM(inputs, hidden, 2, batch_first=True).to(device), nn.Linear(hidden, 8).to(device)) for _ in range(groups)]
    lone_opt = [torch.optim.Adam([*lstm.parameters(), *head.parameters()]) for lstm, head in lone]
    grouped = GroupedLSTM(groups, inputs, hidden, 2).to(device)
    heads = nn.Parameter(torch.randn(groups, hidden, 8, device=device) * 0.1)
    grouped_opt = torch.optim.Adam([*grouped.parameters(), heads])

    def step_lone() -> None:
        for (lstm, head), opt, xg, yg in zip(lone, lone_opt, x, y):
            out, _ = lstm(xg)
            loss = F.cross_entropy(head(out.mean(dim=1)), yg)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def step_grouped() -> None:
        logits = torch.bmm(grouped(x), heads)  # (G, batch, classes)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()) * groups
        grouped_opt.zero_grad()
        loss.backward()
        grouped_opt.step()

    times: dict[str, list[float]] = {"lone": [], "grouped": []}
    for _ in range(steps + 1):  # the first of each is a warm-up
        for name, fn in (("lone", step_lone), ("grouped", step_grouped)):
            start = clocks()[0]
            fn()
            times[name].append(clocks()[0] - start)
    return float(np.median(times["lone"][1:])), float(np.median(times["grouped"][1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="runs per side (default 5)")
    parser.add_argument("--clips", type=int, default=5841, help="training clips (real split: 5,841)")
    parser.add_argument("--val-clips", type=int, default=3494, help="validation clips (real split: 3,494)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first, setup, is left out)")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--sequence-steps", type=int, default=1, help="timed steps of the sequence model after one warm-up (0: skip)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="train.precision of both sides (default float32, the study's)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for both sides (0: torch's default; 1 keeps a shared machine's "
                             "other load from stalling every operation at OpenMP barriers)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.epochs < 2 or args.repeats < 1 or args.seeds < 1:
        parser.error("--epochs must be at least 2, --repeats and --seeds at least 1")
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.precision}, {args.seeds} seeds, "
          f"{args.clips} training clips, {args.val_clips} validation clips, {args.repeats} x {args.epochs} epochs per side")
    data = {"training": synthetic(args.clips, 0), "validation": synthetic(args.val_clips, 1)}
    configs = [run_config(args.epochs, args.precision).with_values(**{"train.seed": seed}) for seed in range(args.seeds)]
    wall: dict[str, list[float]] = {"sequential": [], "grouped": []}
    cpu: dict[str, list[float]] = {"sequential": [], "grouped": []}
    for repeat in range(args.repeats):
        for name, fn in (("sequential", sequential_epochs), ("grouped", grouped_epochs)):
            w, c = fn(data, configs, args.device)
            wall[name] += w
            cpu[name] += c
            print(f"repeat {repeat + 1} {name:10s} epoch seconds (wall) {' '.join(f'{t:.2f}' for t in w)}", flush=True)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    cpu_med = {k: float(np.median(v)) for k, v in cpu.items()}
    for name in wall:
        print(f"{name:10s} median {med[name]:.2f} s per epoch of all {args.seeds} runs (wall), "
              f"{cpu_med[name]:.2f} s CPU, {med[name] / args.seeds:.3f} s per run-epoch")
    print(f"CPU-time ratio: {cpu_med['sequential'] / cpu_med['grouped']:.2f}x")
    if args.sequence_steps:
        lone, grouped = sequence_steps(args.seeds, args.sequence_steps, args.device)
        print(f"whole-clip sequence model, one training step of {args.seeds} runs (median of {args.sequence_steps}): "
              f"nn.LSTM one after another {lone:.3f} s, grouped-weight LSTM {grouped:.3f} s: "
              f"grouped is {lone / grouped:.2f}x")
    print(f"speedup: {med['sequential'] / med['grouped']:.2f}x")


if __name__ == "__main__":
    main()
