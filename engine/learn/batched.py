"""Seed repeats trained as one stacked model: `train_group(configs, data) -> [TrainResult]`.

Runs of the study models that differ only in seed, dropout, learning rate and weight decay
(`group_key`) train together:
every parameter is stacked over the members into one tensor (G, ...), each step gathers
each member's own batch (G, batch, inputs) and runs the layers as batched matrix products
(`torch.baddbmm`), so one pass of Python, autograd and optimizer serves all G members.
Each member keeps what it has alone: its seed's initial weights (`init_member`), its batch
order and dropout generators, its share of the optimizer state (Adam, SGD and Adadelta are
elementwise, so one optimizer over stacked tensors is G optimizers; its own lr and weight
decay, see `_step`), its per-member
gradient clipping, history, selection, checkpoints, cancel and divergence; a member that
stops leaves the group and the others go on. Results are `train_run`'s `TrainResult`s, and
a member's checkpoint is a `train_run` checkpoint: a member resumes alone with `train_run`.

Same numbers as alone to float rounding (bit for bit on this CPU at the tests' sizes when the
members share lr and weight decay; tests/test_batched.py states the tolerance and what was
measured at the study's width).

Sequence models are not grouped: `nn.LSTM` has no batched-weights kernel, and a grouped
LSTM written with `bmm` per frame was measured slower than one run after another on CPU
(benchmarks/seeds.py reports both).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.config import RunConfig, TrainConfig
from ..core.errors import ConfigError
from .model import autocast, dropout_mask
from .train import (AUGMENTED, EVAL_BATCH, TrainHooks, TrainResult, _batch, _check_data, _cpu, _provides, _scaled,
                    divergence_message, epoch_record, final_evaluation, init_member, is_better, learning_warning,
                    loss_weight, make_optimizer, shared_evaluation_splits, shared_split, standardizer_of)

GROUPABLE_ARCHS = ("study", "study_2plus1")
VARYING = ("train.seed", "model.dropout", "train.lr", "train.weight_decay")  # what members of one group may differ in
MAX_GROUP = 16  # members per group (device memory grows with it)


def group_key(config: RunConfig) -> str | None:
    """A string equal for configurations that can train in one group (None: trains alone)."""
    if config.model.arch not in GROUPABLE_ARCHS or config.train.mixup > 0 or config.train.outlier_exposure > 0:
        return None
    flat = config.flat()
    return repr(sorted((k, v) for k, v in flat.items() if k not in VARYING))


def companions(first: RunConfig, queued: list[tuple[str, RunConfig]], limit: int = MAX_GROUP) -> list[str]:
    """Ids of the queued runs (id, config), in queue order, that can train in one group with
    `first` (same `group_key`), at most `limit - 1` of them; [] when `first` trains alone."""
    key = group_key(first)
    if key is None:
        return []
    return [run_id for run_id, config in queued if group_key(config) == key][:max(0, limit - 1)]


@dataclass
class _Member:
    """One run of the group: its configuration, hooks, generators and what it has done."""

    config: RunConfig
    hooks: TrainHooks
    order: torch.Generator  # batch order (CPU), seeded with the run's seed as in train_run
    drops: torch.Generator  # dropout masks, on the device
    history: list[dict] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "val_accuracy": None, "model": None})
    status: str | None = None  # set when the member leaves: "finished" | "cancelled" | "diverged"
    error: str | None = None

    @property
    def p(self) -> float:
        """Dropout between LSTM layers, as the single model's `between` (0 with one layer)."""
        return self.config.model.dropout if self.config.model.num_layers > 1 else 0.0


def _stacked_forward(params: dict[str, torch.Tensor], x: torch.Tensor, config: RunConfig,
                     drops: list[tuple[float, torch.Generator]] | None) -> torch.Tensor:
    """The study model of every member at once: x (G, batch, frames*features) -> logits (G, batch, classes).

    The same function as `model.StudyLSTM` (one LSTM step from a zero state, see `one_step`)
    with each weight stacked (G, ...). `drops`: per member (p, generator) for the dropout
    between LSTM layers while training; None in evaluation.
    """
    m = config.model
    h = _one_step(params, "lstm", m.num_layers, m.hidden_size, x, drops)  # (G, batch, hidden)
    if m.arch == "study_2plus1":
        h = _one_step(params, "extra", 1, m.extra_hidden, h, None)  # (G, batch, extra_hidden)
    return torch.baddbmm(params["head.bias"][:, None], h, params["head.weight"])  # weight leaf (G, hidden, classes)


def _one_step(params: dict[str, torch.Tensor], name: str, layers: int, hidden: int, x: torch.Tensor,
              drops: list[tuple[float, torch.Generator]] | None) -> torch.Tensor:
    """`model.one_step` with stacked weights: x (G, batch, inputs) -> (G, batch, hidden)."""
    for layer in range(layers):
        if layer > 0 and drops is not None and any(p > 0 for p, _ in drops):
            masks = [dropout_mask(x.shape[1:], p, gen, x.dtype, x.device) if p > 0
                     else torch.ones(x.shape[1:], dtype=x.dtype, device=x.device) for p, gen in drops]
            x = x * torch.stack(masks)  # each member's own mask, as its `Dropout` would draw it
        w = f"{name}.weight_ih_l{layer}"  # rows of gates i, f, g, o: stacked as leaves i, f, go (see _Layout)
        w_i, w_go = params[w + ":i"], params[w + ":go"]  # (G, inputs, hidden), (G, inputs, 2*hidden): see _Layout
        b = (params[f"{name}.bias_ih_l{layer}"] + params[f"{name}.bias_hh_l{layer}"])[:, None]  # (G, 1, 4*hidden)
        b_i, _, b_go = b.split([hidden, hidden, 2 * hidden], dim=2)
        i = torch.baddbmm(b_i, x, w_i)  # (G, batch, hidden)
        g, o = torch.baddbmm(b_go, x, w_go).chunk(2, dim=2)
        x = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
    return x


def _member_losses(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Each member's mean (class-weighted) cross-entropy: logits (G, batch, classes), y (G, batch) -> (G,).
    One `F.cross_entropy` per member, as alone (a single batched reduction would sum in another order)."""
    return torch.stack([F.cross_entropy(lg, t, weight=weight) for lg, t in zip(logits, y)])


def _clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """`nn.utils.clip_grad_norm_` for each member: its gradients scaled so their norm is <= max_norm."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (G,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))


class _Layout:
    """How one member's parameters (the single model's, in `named_parameters` order) map onto
    the group's leaves: each parameter stacked over members (G, ...), except the LSTMs' input
    weights, split by gate rows into leaves ":i", ":f" and ":go" so that the unused forget-gate
    rows (see `one_step`) take no gradient and no slice of a leaf needs a full-size gradient
    buffer in the backward pass (measured: slicing one stacked weight cost ~25% of a step).
    Matrices are stored transposed, (G, inputs, rows), the layout in which `bmm`'s backward
    returns their gradient: stored as (G, rows, inputs), each gradient came back as a
    transposed view that autograd copied into a contiguous buffer, every leaf every step
    (measured: 18% of a grouped step, docs/PERFORMANCE.md)."""

    def __init__(self, model: nn.Module) -> None:
        self.names = [n for n, _ in model.named_parameters()]
        self.parts: dict[str, list[tuple[str, int, int]]] = {}  # name -> [(leaf key, first row, end row)]
        for name, p in model.named_parameters():
            if ".weight_ih_l" in name:
                h = p.shape[0] // 4
                self.parts[name] = [(name + ":i", 0, h), (name + ":f", h, 2 * h), (name + ":go", 2 * h, 4 * h)]
            else:
                self.parts[name] = [(name, 0, p.shape[0])]
        self.keys = [key for name in self.names for key, _, _ in self.parts[name]]
        self.matrices = {name for name, p in model.named_parameters() if p.dim() == 2}  # stored transposed

    def _member(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A member's slice of a leaf of `name` in the single model's layout (rows first), or the reverse."""
        return t.t() if name in self.matrices else t

    def stack(self, models: list[nn.Module]) -> list[torch.Tensor]:
        """The leaves (G, rows, ...), matrices (G, inputs, rows), in `keys` order, from each member's initial weights."""
        return [torch.stack([self._member(name, m.get_parameter(name).detach()[a:b]) for m in models]).requires_grad_()
                for name in self.names for _, a, b in self.parts[name]]

    def named(self, leaves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(zip(self.keys, leaves))

    def unused(self, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
        """The forget-gate leaves (no gradient ever flows into them)."""
        return [leaf for key, leaf in zip(self.keys, leaves) if key.endswith(":f")]

    def member_state(self, leaves: list[torch.Tensor], g: int) -> dict[str, torch.Tensor]:
        """Member g's state_dict, in the single model's key order (a copy on the device)."""
        named = self.named(leaves)
        return {name: torch.cat([self._member(name, named[key][g].detach()) for key, _, _ in self.parts[name]])
                for name in self.names}

    def member_optimizer_state(self, state: dict, leaves: list[torch.Tensor], g: int, tc: TrainConfig) -> dict:
        """Member g's share of the group optimizer's state_dict: what its optimizer would hold
        alone (gate leaves joined again; rows that never had a gradient hold zeros, as a lone
        optimizer's state does for zero gradient rows; scalar entries such as Adam's step kept;
        the member's own lr and weight decay, `tc`)."""
        index = {key: j for j, key in enumerate(self.keys)}
        out = {}
        for i, name in enumerate(self.names):
            js = [index[key] for key, _, _ in self.parts[name]]
            present = [j for j in js if j in state["state"]]
            if not present:
                continue
            entry = {}
            for k, v in state["state"][present[0]].items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    entry[k] = torch.cat([self._member(name, state["state"][j][k][g] if j in state["state"]
                                                       else torch.zeros_like(leaves[j][g])) for j in js])
                else:
                    entry[k] = v
            out[i] = entry
        groups = [dict(group, params=list(range(len(self.names))), lr=tc.lr, weight_decay=tc.weight_decay)
                  for group in state["param_groups"]]
        return {"state": out, "param_groups": groups}


def _step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], members: list[TrainConfig] | None) -> None:
    """One optimizer step. `members` None: they share lr and weight decay, which the optimizer
    holds (the exact lone update). Else the optimizer runs with lr 1 and no weight decay, each
    member's decay is added to its gradient first (as torch's optimizers add it) and its step
    is scaled by its lr afterwards: Adam, SGD and Adadelta all move a parameter by lr times a
    direction that does not depend on lr, so p_new = p - lr * (p - p_at_lr_1); equal to the
    lone update to float rounding (not bit for bit)."""
    if members is None:
        optimizer.step()
        return
    with torch.no_grad():
        live = [p for p in params if p.grad is not None]
        lr = torch.tensor([m.lr for m in members], device=live[0].device)
        wd = torch.tensor([m.weight_decay for m in members], device=live[0].device)
        for p in live:
            shape = (-1,) + (1,) * (p.dim() - 1)
            p.grad.add_(p * wd.view(shape))
        before = [p.detach().clone() for p in live]
        optimizer.step()
        for p, b in zip(live, before):
            p.copy_(b - lr.view((-1,) + (1,) * (p.dim() - 1)) * (b - p))


def _keep_rows(params: list[torch.Tensor], optimizer: torch.optim.Optimizer, keep: list[int],
               opt_config: TrainConfig) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """The stacked parameters and optimizer with only the members at rows `keep`."""
    state = optimizer.state_dict()
    new = [p.detach()[keep].clone().requires_grad_() for p in params]
    opt = make_optimizer(new, opt_config)
    state["state"] = {i: {k: (v[keep] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in s.items()}
                      for i, s in state["state"].items()}
    opt.load_state_dict(state)
    return new, opt


def _check_group(configs: list[RunConfig]) -> None:
    if not configs:
        raise ConfigError("a group needs at least one configuration")
    keys = {group_key(c) for c in configs}
    if None in keys:
        raise ConfigError(f"only the study models train in groups ({', '.join(GROUPABLE_ARCHS)}), "
                          f"not {sorted({c.model.arch for c in configs} - set(GROUPABLE_ARCHS))}")
    if len(keys) > 1:
        raise ConfigError(f"a group's runs may differ only in {', '.join(VARYING)}")


def train_group(configs: list[RunConfig], data: dict[str, Any], *, device: str | None = None,
                hooks: list[TrainHooks | None] | None = None,
                on_result: Callable[[int, TrainResult], None] | None = None) -> list[TrainResult]:
    """Train `configs` (same `group_key`) together; result i is what `train_run(configs[i],
    data)` returns, to float rounding, with `.group` set. `hooks[i]`: member i's TrainHooks
    (its checkpoints are `train_run` checkpoints). `on_result(i, result)`: called as soon as
    member i's result is known: when it leaves (cancelled, diverged) while the others train
    on, else at the end (so a cancelled member is stored at once, not when the group ends)."""
    _check_group(configs)
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = configs[0]
    _check_data(config, data)
    scale = standardizer_of(config, data)
    hooks = list(hooks) if hooks is not None else [None] * len(configs)
    if len(hooks) != len(configs):
        raise ConfigError(f"{len(hooks)} hooks for {len(configs)} configurations")
    views = _scaled(data[AUGMENTED].x, scale, device) if AUGMENTED in data else None  # (views, n, frames, features)
    seeds = [c.train.seed for c in configs]
    results: dict[int, TrainResult] = {}
    evaluator: list[nn.Module] = []

    def finish(g: int, m: _Member) -> None:  # member g's TrainResult, evaluated alone as train_run does
        if not evaluator:
            evaluator.append(init_member(config, device)[0])  # a model to evaluate in (built under the global-generator lock)
        metrics, predictions, reference = final_evaluation(evaluator[0], m.best["model"], data, scale, device,
                                                           config.train.precision)
        results[g] = TrainResult(ood_reference=reference,
            status=m.status or "finished", history=m.history, step_losses=m.step_losses, metrics=metrics,
            predictions=predictions, best_epoch=m.best["epoch"],
            state_dict=_cpu(m.best["model"]) if m.best["model"] is not None else {},
            standardizer=None if scale is None else {"mean": scale[0].tolist(), "std": scale[1].tolist()},
            device=device, error=m.error, group={"size": len(configs), "seeds": seeds, "member": g},
            warning=learning_warning(m.history, len(config.class_names)) if (m.status or "finished") == "finished" else None)
        if on_result is not None:
            on_result(g, results[g])

    with contextlib.ExitStack() as stack:
        x_train, y_train = stack.enter_context(shared_split(data["training"], scale, device))
        evals = shared_evaluation_splits(stack, data, scale, device)
        members = _train_members(configs, hooks, x_train, y_train, views, evals, loss_weight(config, data, device),
                                 device, finish)
    for g, m in enumerate(members):
        if g not in results:
            finish(g, m)
    return [results[g] for g in range(len(members))]


def _train_members(configs, hooks, x_train, y_train, views, evals, weight, device,
                   left: Callable[[int, _Member], None]) -> list[_Member]:
    """The epochs of `train_group`; returns the members (history, best, status). `left(i,
    member)` is called when member i leaves early (cancelled, diverged)."""
    config, tc = configs[0], configs[0].train
    members, models = [], []
    for c, h in zip(configs, hooks):
        model, drops = init_member(c, device)
        models.append(model)
        members.append(_Member(c, h or TrainHooks(), torch.Generator().manual_seed(c.train.seed), drops))
    layout = _Layout(models[0])
    params = layout.stack(models)  # leaves (G, ...)
    del models
    scaled = len({(c.train.lr, c.train.weight_decay) for c in configs}) > 1
    opt_config = replace(tc, lr=1.0, weight_decay=0.0) if scaled else tc  # see _step
    optimizer = make_optimizer(params, opt_config)
    active = list(range(len(members)))  # members still training, in row order of `params`
    n, batch = len(x_train), tc.batch_size
    steps = math.ceil(n / batch)
    t0 = time.perf_counter()
    for epoch in range(1, tc.epochs + 1):
        if not active:
            break
        orders = torch.stack([torch.randperm(n, generator=members[i].order) for i in active]).to(device)  # (G, n)
        losses = torch.zeros(len(active), steps, device=device)
        for step in range(steps):
            leaving = {i: "cancelled" for i in active if members[i].hooks.should_stop()}
            if leaving:
                params, optimizer, orders, losses = _leave(leaving, active, members, params, optimizer, orders,
                                                           losses, step, epoch, steps, opt_config, left)
                if not active:
                    break
            idx = orders[:, step * batch:(step + 1) * batch]  # (G, b)
            if views is None and not (tc.time_mask or tc.freq_mask):  # plain clips: one gather for every member
                xb = x_train[idx].flatten(2)  # (G, b, frames*features)
            else:  # each member's batch as alone: its clips, its augmented views and masks from its generator
                xb = torch.stack([_batch(x_train, views, idx[r], tc, members[i].order)
                                  for r, i in enumerate(active)]).flatten(2)
            named = layout.named(params)
            with autocast(device, tc.precision):
                logits = _stacked_forward(named, xb, config, [(members[i].p, members[i].drops) for i in active])
                member_loss = _member_losses(logits, y_train[idx], weight)  # (G,)
            optimizer.zero_grad(set_to_none=True)
            member_loss.sum().backward()  # members share no parameter: each gets its own gradient
            if any(members[i].config.train.weight_decay for i in active):
                for leaf in layout.unused(params):  # alone, these rows get a zero gradient, so decay applies to them
                    leaf.grad = torch.zeros_like(leaf)
            if tc.grad_clip:
                _clip_per_member(params, tc.grad_clip)
            _step(optimizer, params, [members[i].config.train for i in active] if scaled else None)
            losses[:, step] = member_loss.detach()
            due = [r for r, i in enumerate(active) if _provides(members[i].hooks, "on_step")
                   and ((step + 1) % members[i].hooks.step_every == 0 or step + 1 == steps)]
            if due:  # a host sync, only when a member's hooks ask for step losses
                values = losses[:, step].tolist()
                for r in due:
                    members[active[r]].hooks.on_step(epoch, step + 1, steps, values[r])
                bad = {active[r]: "diverged" for r in due if not math.isfinite(values[r])}
                if bad:
                    params, optimizer, orders, losses = _leave(bad, active, members, params, optimizer, orders,
                                                               losses, step + 1, epoch, steps, opt_config, left)
                    if not active:
                        break
        if not active:
            break
        values = losses.tolist()  # the epoch's one host sync for training losses
        bad = {i: "diverged" for r, i in enumerate(active) if not all(map(math.isfinite, values[r]))}
        if bad:
            params, optimizer, orders, losses = _leave(bad, active, members, params, optimizer, orders,
                                                       losses, steps, epoch, steps, opt_config, left)
            values = losses.tolist()
        if not active:
            break
        logits = {name: _stacked_logits(layout.named(params), x, config) for name, (x, _) in evals.items()}  # (G, n, classes)
        records = [epoch_record(epoch, v, {name: lg[r] for name, lg in logits.items()}, evals)
                   for r, v in enumerate(values)]
        seconds = time.perf_counter() - t0
        state = None
        for r, i in enumerate(active):
            m = members[i]
            m.step_losses += values[r]
            records[r]["seconds"] = seconds
            m.history.append(records[r])
            if is_better(tc.select, m.best, records[r]):
                m.best = {"epoch": epoch, "val_accuracy": records[r]["val_accuracy"], "model": layout.member_state(params, r)}
            if _provides(m.hooks, "on_epoch"):
                checkpoint = {"epoch": epoch, "history": [dict(h) for h in m.history], "step_losses": list(m.step_losses)}
                if m.hooks.checkpoint_due(epoch):
                    state = state or optimizer.state_dict()
                    checkpoint.update(model=_cpu(layout.member_state(params, r)),
                                      optimizer=_cpu(layout.member_optimizer_state(state, params, r, m.config.train)), best=_cpu(m.best),
                                      rng={"shuffle": m.order.get_state(), "dropout": m.drops.get_state()})
                m.hooks.on_epoch(dict(records[r]), checkpoint)
    return members


def _leave(leaving: dict[int, str], active: list[int], members: list[_Member], params, optimizer, orders, losses,
           done_steps: int, epoch: int, steps: int, opt_config: TrainConfig,
           left: Callable[[int, _Member], None]):
    """Members in `leaving` (index -> "cancelled" | "diverged") stop after `done_steps` steps of
    `epoch`: their losses so far are kept as a lone run keeps them, `left(i, member)` is told;
    the group goes on without them.
    Updates `active` in place; returns params, optimizer, orders and losses of the rest."""
    values = losses[:, :done_steps].tolist()
    keep = []
    for r, i in enumerate(list(active)):
        if i not in leaving:
            keep.append(r)
            continue
        m, row = members[i], values[r]
        bad = next((k for k, v in enumerate(row) if not math.isfinite(v)), None)
        if bad is not None:
            m.step_losses += row[:bad]
            m.status, m.error = "diverged", divergence_message(row[bad], epoch, bad + 1, steps)
        else:
            m.step_losses += row
            m.status = "cancelled"
        active.remove(i)
        left(i, m)
    if not active:
        return params, optimizer, orders, losses
    params, optimizer = _keep_rows(params, optimizer, keep, opt_config)
    return params, optimizer, orders[keep], losses[keep]


@torch.inference_mode()
def _stacked_logits(params: dict[str, torch.Tensor], x: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """Every member's logits (G, n, classes) float32 for all of x (n, frames, features), in
    evaluation mode (no dropout), EVAL_BATCH clips at a time, as `train._logits`."""
    groups = next(iter(params.values())).shape[0]
    flat = x.flatten(1)  # (n, frames*features)
    with autocast(str(x.device), config.train.precision):
        return torch.cat([_stacked_forward(params, flat[i:i + EVAL_BATCH].expand(groups, -1, -1), config, None).float()
                          for i in range(0, len(flat), EVAL_BATCH)], dim=1)
