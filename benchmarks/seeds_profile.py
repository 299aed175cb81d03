"""Where a training step of the study base goes, grouped (5 seeds) and alone: torch profiler
self CPU time by operator class, to bound what grouping can save on a CPU.

Grouping removes per-run Python, autograd bookkeeping and small-operator launches; it cannot
shrink the matrix products (forward and backward) or the optimizer's passes over the weights,
which each member needs in full. If those take a share `a` of a lone step, G members grouped
take at least G * a of G lone steps' time: the speedup is at most 1 / a (Amdahl).

    python benchmarks/seeds_profile.py [--seeds 5] [--clips 2000] [--threads 1]

Profiles the second epoch of each side (the first, with setup, and the final evaluation are
left out), no validation split; prints each class per training step of all G members and the
bound `bound: grouping can gain at most <ratio>x (products and optimizer: <share>% of ...)`.
"fill_" is listed apart: in a lone run it is almost all the zero-filled full-size gradient
buffers behind `model.one_step`'s gate slices of `weight_ih`, which the group does not have.

`--gate-rows N` instead times one lone run per epoch (training and validation), as it is now
and with the slice backward it had before `model._GateRows`, alternating N times; ends with
`gate rows (per epoch): <ratio>x`.

`--steps N` instead times N training steps (forward, backward, Adam; batch 100, dropout 0.1)
of four forms, interleaved in one process, medians: the G models one after another
(`model.StudyLSTM`), the same with the lone step's backward as it was before `model._GateRows`
(autograd's backward of the gate-row slices, each zero-filling a full-size gradient), grouped with each stacked matrix stored (G, rows, inputs) and used as a
transposed view (this module's first grouped layout, whose gradients autograd copied into
contiguous buffers), and grouped as `engine.learn.batched` stores them now, (G, inputs, rows).
Ends with `gate rows: <ratio>x` (slice backward / now, alone), `layout: <ratio>x` (old grouped /
current grouped) and `speedup: <ratio>x`
(one after another / current grouped).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from training import run_config, synthetic  # noqa: E402

from engine.learn.batched import train_group  # noqa: E402
from engine.learn.train import TrainHooks, train_run  # noqa: E402

GEMM = ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear")  # matrix products (forward; backward runs these too)
OPTIM = ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")  # the optimizer's elementwise passes


def classify(name: str) -> str:
    op = name.split("::")[-1].lower()
    if op == "fill_":
        return "fill_"
    if op in GEMM:
        return "matrix products"
    if any(op.startswith(p) or p in op for p in OPTIM):
        return "optimizer"
    return "everything else"


def profile_epoch(train: Callable[[TrainHooks], Any]) -> tuple[float, dict[str, float]]:
    """Self CPU seconds of the aten operators in the second epoch of `train(hooks)` (a run of
    at least 3 epochs whose first hooks get on_epoch), and their split by `classify`."""
    prof = profile(activities=[ProfilerActivity.CPU])

    def on_epoch(record: dict, checkpoint: dict) -> None:
        if record["epoch"] == 1:
            prof.start()
        elif record["epoch"] == 2:
            prof.stop()
    train(TrainHooks(on_epoch=on_epoch))
    shares: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            shares[classify(event.key)] += event.self_cpu_time_total / 1e6
    return sum(shares.values()), dict(shares)


@contextlib.contextmanager
def sliced_backward() -> Iterator[None]:
    """`model.one_step` as it was before `model._GateRows`: F.linear on the gate-row slices of
    weight_ih, whose autograd backward zero-fills a full-size gradient buffer per slice."""
    import torch.nn.functional as F

    from engine.learn import model

    def one_step(lstm, x, drop=None):
        h = lstm.hidden_size
        for layer in range(lstm.num_layers):
            if layer > 0:
                x = drop(x) if drop is not None else F.dropout(x, lstm.dropout, lstm.training)
            w = getattr(lstm, f"weight_ih_l{layer}")
            b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            g, o = F.linear(x, w[2 * h:], b[2 * h:]).chunk(2, dim=1)
            x = torch.sigmoid(o) * torch.tanh(torch.sigmoid(F.linear(x, w[:h], b[:h])) * torch.tanh(g))
        return x

    kept, model.one_step = model.one_step, one_step
    try:
        yield
    finally:
        model.one_step = kept


def step_times(groups: int, steps: int) -> dict[str, float]:
    """Median seconds of one training step of `groups` study-base models in each of the three forms."""
    import torch.nn.functional as F

    from engine.learn.batched import _Layout, _stacked_forward
    from engine.learn.model import StudyLSTM

    config = run_config(1)
    batch, inputs, hidden = 100, 63, 500
    x = torch.randn(groups, batch, inputs)
    y = torch.randint(0, 8, (groups, batch))
    models = [StudyLSTM(inputs, hidden, 2, 0.1, 8) for _ in range(groups)]
    for g, m in enumerate(models):
        m.between.generator = torch.Generator().manual_seed(g)
    lone_opts = [torch.optim.Adam(m.parameters(), lr=1e-4) for m in models]
    layout = _Layout(models[0])
    new = layout.stack(models)  # matrices (G, inputs, rows)
    matrix = [key.split(":")[0] in layout.matrices for key in layout.keys]
    old = [(leaf.detach().transpose(1, 2).contiguous() if is_matrix else leaf.detach().clone()).requires_grad_()
           for leaf, is_matrix in zip(new, matrix)]  # matrices (G, rows, inputs)
    new_opt, old_opt = torch.optim.Adam(new, lr=1e-4), torch.optim.Adam(old, lr=1e-4)
    drops = [(0.1, torch.Generator().manual_seed(g)) for g in range(groups)]

    def lone() -> None:
        for m, opt, xg, yg in zip(models, lone_opts, x, y):
            loss = F.cross_entropy(m(xg), yg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def grouped(leaves: list[torch.Tensor], opt: torch.optim.Optimizer, views: bool) -> None:
        named = layout.named([leaf.transpose(1, 2) if views and is_matrix else leaf
                              for leaf, is_matrix in zip(leaves, matrix)])
        logits = _stacked_forward(named, x, config, drops)
        loss = torch.stack([F.cross_entropy(lg, t) for lg, t in zip(logits, y)]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def lone_sliced() -> None:  # the lone step before `model._GateRows`: autograd's backward of the gate slices
        with sliced_backward():
            lone()

    forms = {"one after another": lone, "one after another, slice backward": lone_sliced,
             "grouped, (G, rows, inputs) views": lambda: grouped(old, old_opt, True),
             "grouped, (G, inputs, rows)": lambda: grouped(new, new_opt, False)}
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(steps + 1):  # the first of each is a warm-up
        for name, fn in forms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t[1:])) for name, t in times.items()}


def gate_rows_epochs(repeats: int, precision: str = "float32", epochs: int = 4, clips: int = 5841) -> dict[str, float]:
    """Median seconds per epoch (training and validating, the first left out) of one study-base
    run (`train_run`, `clips` synthetic training clips, default the real 5,841, and validation in
    the real proportion, 3,494 for 5,841) with the lone step as it is now and with the slice
    backward it had before `model._GateRows`, the two alternating `repeats` times."""
    from seeds import sequential_epochs  # benchmarks/seeds.py: per-epoch wall seconds, the first left out

    data = {"training": synthetic(clips, 0), "validation": synthetic(max(8, clips * 3494 // 5841), 1)}
    seconds: dict[str, list[float]] = {"now": [], "slice backward": []}
    for _ in range(repeats):
        for name in seconds:
            with sliced_backward() if name == "slice backward" else contextlib.nullcontext():
                seconds[name] += sequential_epochs(data, [run_config(epochs, precision)], "cpu")[0]
    return {name: float(np.median(values)) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--clips", type=int, default=2000, help="training clips (batch 100: clips / 100 steps per epoch)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: least disturbed on a shared machine)")
    parser.add_argument("--steps", type=int, default=0, help="time this many training steps of each form instead")
    parser.add_argument("--gate-rows", type=int, default=0,
                        help="instead time this many alternations of one lone run per epoch, now and with the slice backward")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"], help="with --gate-rows")
    parser.add_argument("--gate-clips", type=int, default=5841, help="with --gate-rows: training clips (default 5,841)")
    parser.add_argument("--gate-epochs", type=int, default=4, help="with --gate-rows: epochs per run, the first left out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gate_rows:
        medians = gate_rows_epochs(args.gate_rows, args.precision, args.gate_epochs, args.gate_clips)
        print(f"one study-base run, {args.precision}, {args.threads} thread(s), median s per epoch of {args.gate_rows} alternations: "
              + ", ".join(f"{name} {value:.3f}" for name, value in medians.items()))
        print(f"gate rows (per epoch): {medians['slice backward'] / medians['now']:.2f}x")
        return
    if args.steps:
        medians = step_times(args.seeds, args.steps)
        print(f"{args.seeds} study-base models, batch 100, {args.threads} thread(s), median of {args.steps} steps")
        for name, seconds in medians.items():
            print(f"{name:<34}{1000 * seconds:8.1f} ms per step of all {args.seeds}")
        lone, sliced, old, new = medians.values()
        print(f"gate rows: {sliced / lone:.2f}x (a lone step, slice backward / `model._GateRows`)")
        print(f"layout: {old / new:.2f}x")
        print(f"speedup: {lone / new:.2f}x")
        return
    data = {"training": synthetic(args.clips, 0)}
    configs = [run_config(3).with_values(**{"train.seed": s}) for s in range(args.seeds)]
    lone: dict[str, float] = defaultdict(float)
    for config in configs:
        _, shares = profile_epoch(lambda hooks: train_run(config, data, device="cpu", hooks=hooks))
        for name, seconds in shares.items():
            lone[name] += seconds
    lone_total = sum(lone.values())
    group_total, grouped = profile_epoch(
        lambda hooks: train_group(configs, data, device="cpu", hooks=[hooks] + [None] * (len(configs) - 1)))
    steps = -(-args.clips // configs[0].train.batch_size)
    print(f"{args.seeds} seeds, {args.clips} clips ({steps} steps), second epoch, {args.threads} thread(s); "
          f"self CPU ms of aten operators per step of all {args.seeds}")
    print(f"{'class':<18}{'one after another':>20}{'grouped':>12}")
    for name in ("matrix products", "optimizer", "fill_", "everything else"):
        print(f"{name:<18}{1000 * lone.get(name, 0.0) / steps:>20.1f}{1000 * grouped.get(name, 0.0) / steps:>12.1f}")
    print(f"{'total':<18}{1000 * lone_total / steps:>20.1f}{1000 * group_total / steps:>12.1f}")
    print(f"measured ratio (operator time): {lone_total / group_total:.2f}x")
    fixed = lone.get("matrix products", 0.0) + lone.get("optimizer", 0.0)
    print(f"bound: grouping can gain at most {lone_total / fixed:.2f}x "
          f"(products and optimizer: {100 * fixed / lone_total:.0f}% of the lone runs' operator time)")


if __name__ == "__main__":
    main()
