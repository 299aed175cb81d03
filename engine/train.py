"""One readable training loop: `train_run(config, data) -> TrainResult`.

All splits go to the device once as tensors; batches are index slices of a shuffled order
drawn from a seeded `torch.Generator` (no DataLoader, no per-item Python). Step losses stay
on the device and are read once per epoch, so a step costs no host sync unless a hook asks
for its loss. Same seed + config + data on CPU -> identical numbers, also across a resume.

Dropout draws from torch's global generator, which all threads of a process share. Each run
keeps its own copy of that generator's state (`RunRNG`) and swaps it in, under a lock, for
each training forward pass, so that runs training at the same time in one process get the
same masks as each alone. (Not covered: cuDNN's multi-layer LSTM dropout on a GPU, which
keeps its own generator inside cuDNN.)
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RunConfig, TrainConfig
from .features import fit_standardizer
from .errors import ConfigError
from .labels import NUM_CLASSES
from .metrics import evaluate
from .model import autocast, build_model

EVAL_BATCH = 1024  # clips per forward pass when evaluating
EVAL_SPLITS = ("validation", "validation_shift", "test")  # evaluated at the end, when present
AUGMENTED = "training_augmented"  # data key of the augmented training views (FeatureSet, x (views, n, frames, features))
_GLOBAL_RNG_LOCK = threading.Lock()  # whoever holds it may seed, draw from or swap torch's global generators


class RunRNG:
    """One run's own state of torch's global generators (CPU, and CUDA on a CUDA device).

    `active()` installs it for a block and saves what the block drew, under the lock, so
    that dropout masks depend only on the run's seed, also with other runs training at once.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.device = device
        self.cpu_state, self.cuda_state = self._read()

    def _read(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda else None

    def load(self, cpu_state: torch.Tensor, cuda_state: torch.Tensor | None) -> None:
        self.cpu_state = cpu_state
        if self.cuda and cuda_state is not None:
            self.cuda_state = cuda_state

    @contextmanager
    def active(self) -> Iterator[None]:
        with _GLOBAL_RNG_LOCK:
            torch.set_rng_state(self.cpu_state)
            if self.cuda:
                torch.cuda.set_rng_state(self.cuda_state, self.device)
            try:
                yield
            finally:
                self.cpu_state, self.cuda_state = self._read()


@dataclass
class TrainResult:
    status: str  # "finished" | "diverged" | "cancelled"
    history: list[dict]  # per epoch: epoch (1-based), train_loss, val_loss, val_accuracy, [val_shift_accuracy,] seconds
    step_losses: list[float]
    metrics: dict  # {"validation": evaluate(...), "validation_shift": ..., "test": ...}; {} when no epoch ended
    predictions: dict  # {"validation": {"ids", "y", "probs"}, "validation_shift": {...}, "test": {...}}
    best_epoch: int | None
    state_dict: dict  # weights of the selected epoch (CPU tensors); {} when no epoch ended
    standardizer: dict | None  # {"mean": [...], "std": [...]} when train.standardize
    device: str
    error: str | None = None
    warning: str | None = None  # learning_warning(history): the run finished but learned nothing


class TrainHooks:
    """A run's callbacks; every one is optional and the defaults do nothing.

    Subclass and override, or pass callables: `TrainHooks(on_epoch=save, should_stop=ev.is_set)`.
    - on_step(epoch, step, steps_per_epoch, loss): epoch and step 1-based. Called every
      `step_every` steps and at each epoch's last step, and only when provided: reading the
      loss is a host sync, so keep step_every > 1 on a GPU.
    - on_epoch(record, checkpoint): after each epoch; `checkpoint` is the `resume=` dict:
      {"epoch", "model", "optimizer", "history", "step_losses", "best", "rng"} (CPU copies).
    - should_stop() -> bool: checked before every step; True ends the run as "cancelled".
    """

    step_every: int = 1

    def __init__(self, on_step: Callable | None = None, on_epoch: Callable | None = None,
                 should_stop: Callable[[], bool] | None = None, step_every: int | None = None) -> None:
        for name, fn in (("on_step", on_step), ("on_epoch", on_epoch), ("should_stop", should_stop)):
            if fn is not None:
                setattr(self, name, fn)
        if step_every is not None:
            self.step_every = max(1, int(step_every))

    def on_step(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        pass

    def on_epoch(self, record: dict, checkpoint: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def learning_warning(history: list[dict], num_classes: int = NUM_CLASSES) -> str | None:
    """'did not learn: ...' when a run's epochs show it learned nothing, else None.

    Two signs, from the per-epoch mean training loss (cross-entropy, nats): it rose (the best
    of the last 3 epochs is over 10% above epoch 1: the optimiser is blowing up, e.g. SGD with
    lr 1e3), or it never got below ln(num_classes), the loss of guessing every class equally,
    while validation accuracy (when measured) stayed within 1.5x of chance."""
    losses = [float(h["train_loss"]) for h in history if h.get("train_loss") is not None
              and math.isfinite(h["train_loss"])]
    if not losses:
        return None
    if len(losses) >= 2 and min(losses[-3:]) > 1.1 * losses[0]:
        return (f"did not learn: training loss rose from {losses[0]:.3g} to {losses[-1]:.3g} over "
                f"{len(losses)} epochs; try a lower learning rate, grad_clip or standardize")
    chance = math.log(num_classes)
    accuracy = history[-1].get("val_accuracy")
    if losses[-1] >= chance and (accuracy is None or accuracy <= 1.5 / num_classes):
        return (f"did not learn: training loss {losses[-1]:.3g} is no lower than guessing ({chance:.3g} = "
                f"ln {num_classes})" + ("" if accuracy is None else f", validation accuracy {accuracy:.1%}"))
    return None


def _provides(hooks: TrainHooks, name: str) -> bool:
    """True when `hooks` replaces the no-op default `name` (so calling it is worth a sync)."""
    return name in vars(hooks) or getattr(type(hooks), name) is not getattr(TrainHooks, name)


def class_weights(y: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Inverse-frequency weights n / (classes present * count); 0 for classes absent from y."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights.astype(np.float32)


def make_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam, SGD (with momentum) or Adadelta (rho, eps) over the model's parameters.

    Adam and SGD use their fused kernels (one pass over all parameters per step, on CPU and
    CUDA): the same update, measured 1.5x faster per epoch than the default for the study model.
    """
    params, wd = model.parameters(), tc.weight_decay
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=wd, fused=True)
    if tc.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=tc.lr, rho=tc.rho, eps=tc.eps, weight_decay=wd, foreach=True)
    return torch.optim.Adam(params, lr=tc.lr, weight_decay=wd, fused=True)


def _check_data(config: RunConfig, data: dict) -> None:
    if "training" not in data or len(data["training"].y) == 0:
        raise ConfigError("training needs a non-empty 'training' split")
    fc = config.features
    if AUGMENTED in data:
        views = np.asarray(data[AUGMENTED].x)
        if views.ndim != 4 or views.shape[1:] != np.asarray(data["training"].x).shape:
            raise ConfigError(f"augmented views have shape {views.shape}; expected (views, *{data['training'].x.shape})")
    for name, fs in data.items():
        if name == AUGMENTED:
            continue
        x, y = fs.x, np.asarray(fs.y)
        if x.ndim != 3 or x.shape[2] != fc.feature_dim or len(y) != len(x):
            raise ConfigError(f"{name} features have shape {x.shape} for {len(y)} labels; "
                              f"the configuration expects (clips, frames, {fc.feature_dim})")
        if config.model.arch.startswith("study") and x.shape[1] != fc.num_frames:
            raise ConfigError(f"{name} features have {x.shape[1]} frames; the study model expects {fc.num_frames}")
        if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
            raise ConfigError(f"{name} labels must be class ids 0..{NUM_CLASSES - 1}")


def _to_device(fs: Any, scale: tuple[np.ndarray, np.ndarray] | None, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A FeatureSet as (x (n, frames, features) float32, y (n,) int64) on `device`, scaled if asked."""
    return _scaled(fs.x, scale, device), torch.as_tensor(np.asarray(fs.y, dtype=np.int64)).to(device)


def _scaled(x: np.ndarray, scale: tuple[np.ndarray, np.ndarray] | None, device: str) -> torch.Tensor:
    """x (..., features) as float32 on `device`, minus mean and over std (per feature) when `scale`.

    A memory-mapped or read-only array is copied first: a tensor sharing a file's pages dies
    with SIGBUS when the file shrinks under it."""
    array = np.asarray(x, dtype=np.float32)
    if isinstance(x, np.memmap) or not array.flags.writeable:
        array = array.copy()
    out = torch.as_tensor(array).to(device)
    if scale is not None:
        mean, std = (torch.as_tensor(v).to(device) for v in scale)
        out = (out - mean) / std
    return out


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """Logits (n, classes) float32 for all of x, in eval mode, EVAL_BATCH clips at a time."""
    model.eval()
    with autocast(str(x.device), precision):
        return torch.cat([model(x[i:i + EVAL_BATCH]).float() for i in range(0, len(x), EVAL_BATCH)])


def _cpu(obj: Any) -> Any:
    """A CPU copy of tensors nested in dicts/lists (a snapshot that later steps cannot change)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def spec_mask(x: torch.Tensor, time_mask: int, freq_mask: int, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-style masking (Park et al., Interspeech 2019) of x (batch, frames, features):
    per clip one run of t ~ U{0..time_mask} consecutive frames and one of f ~ U{0..freq_mask}
    consecutive feature rows set to 0 (the mean, for standardised features). Returns a new tensor;
    the random draws come from `gen` (CPU), so a run stays reproducible and resumable."""
    batch, frames, features = x.shape
    keep = torch.ones(batch, frames, features)
    for size, axis, length in ((time_mask, 1, frames), (freq_mask, 2, features)):
        if size <= 0:
            continue
        width = torch.randint(0, min(size, length) + 1, (batch,), generator=gen)  # (batch,)
        start = (torch.rand(batch, generator=gen) * (length - width + 1)).long()  # (batch,)
        pos = torch.arange(length)[None, :]  # (1, length)
        hit = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (batch, length)
        keep = keep * (~hit).float().unsqueeze(3 - axis)
    return x * keep.to(x.device, x.dtype)


def _batch(x: torch.Tensor, views: torch.Tensor | None, idx: torch.Tensor, tc: TrainConfig,
           gen: torch.Generator) -> torch.Tensor:
    """The training batch for indices idx: each clip clean or one of its augmented views (chosen
    uniformly, with `gen`), then spec masking if configured. (batch, frames, features)."""
    xb = x[idx]
    if views is not None:
        pick = torch.randint(0, views.shape[0] + 1, (len(idx),), generator=gen).to(x.device)  # 0: clean
        use = pick > 0
        if bool(use.any()):
            xb = xb.clone()
            xb[use] = views[pick[use] - 1, idx[use]]
    if tc.time_mask or tc.freq_mask:
        xb = spec_mask(xb, tc.time_mask, tc.freq_mask, gen)
    return xb


def _train_epoch(model, optimizer, x, y, weight, tc, gen, rng, hooks, epoch, report,
                 views=None) -> tuple[torch.Tensor, str | None]:
    """One pass over (x, y) in shuffled batches (clips drawn from `views` (views, n, frames,
    features) too, when given). Returns the step losses (steps,) on the device and
    "cancelled" / "diverged" (a hook saw a non-finite loss) / None."""
    model.train()
    steps = math.ceil(len(x) / tc.batch_size)
    order = torch.randperm(len(x), generator=gen).to(x.device)  # (n,)
    losses = torch.zeros(steps, device=x.device)
    for step in range(steps):
        if hooks.should_stop():
            return losses[:step], "cancelled"
        idx = order[step * tc.batch_size:(step + 1) * tc.batch_size]
        xb = _batch(x, views, idx, tc, gen)
        with rng.active(), autocast(str(x.device), tc.precision):
            logits = model(xb)  # (batch, classes)
            loss = F.cross_entropy(logits, y[idx], weight=weight)  # float32 under autocast
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        losses[step] = loss.detach()
        if report and ((step + 1) % hooks.step_every == 0 or step + 1 == steps):
            value = loss.item()
            hooks.on_step(epoch, step + 1, steps, value)
            if not math.isfinite(value):
                return losses[:step + 1], "diverged"
    return losses, None


def train_run(config: RunConfig, data: dict[str, Any], *, device: str | None = None,
              hooks: TrainHooks | None = None, resume: dict | None = None) -> TrainResult:
    """Train `config` on data["training"], validate each epoch on data["validation"] (if
    present), then evaluate the selected epoch's model on validation and test (if present).

    `data`: split name -> FeatureSet (only .x, .y, .ids are used): "training", optionally
    "validation", "validation_shift" (the cross-collection validation, evaluated each epoch
    and at the end, never used to select) and "test", and AUGMENTED (x: the training clips'
    augmented views, (views, n, frames, features), drawn from in every batch). `device`: default "cuda"
    when available, else "cpu". `resume`: a checkpoint given to hooks.on_epoch; training
    continues from its epoch + 1 and ends as an uninterrupted run with the same seed would.
    The validation loss is unweighted cross-entropy even with class_weighting.
    """
    tc = config.train
    hooks = hooks or TrainHooks()
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_data(config, data)
    scale = fit_standardizer(np.asarray(data["training"].x, dtype=np.float32)) if tc.standardize else None
    splits = {name: _to_device(fs, scale, device) for name, fs in data.items()
              if name != AUGMENTED and len(fs.y)}  # empty: skipped
    x_train, y_train = splits["training"]
    views = _scaled(data[AUGMENTED].x, scale, device) if AUGMENTED in data else None  # (views, n, frames, features)
    weight = torch.as_tensor(class_weights(np.asarray(data["training"].y))).to(device) if tc.class_weighting else None
    with _GLOBAL_RNG_LOCK:
        torch.manual_seed(tc.seed)  # initial weights, then (in `rng`) dropout masks
        model = build_model(config.model, config.features).to(device)
        rng = RunRNG(device)
    optimizer = make_optimizer(model, tc)
    gen = torch.Generator().manual_seed(tc.seed)  # batch order
    history: list[dict] = []
    step_losses: list[float] = []
    best: dict = {"epoch": None, "val_accuracy": None, "model": None}
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        history, step_losses = list(resume["history"]), list(resume["step_losses"])
        best = dict(resume["best"])
        gen.set_state(resume["rng"]["shuffle"])
        rng.load(resume["rng"]["torch"], resume["rng"].get("cuda"))
    report, checkpoints = _provides(hooks, "on_step"), _provides(hooks, "on_epoch")
    status, error = "finished", None
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)

    for epoch in range(len(history) + 1, tc.epochs + 1):
        losses, stop = _train_epoch(model, optimizer, x_train, y_train, weight, tc, gen, rng, hooks, epoch, report,
                                    views)
        values = losses.tolist()  # the epoch's one host sync for training losses
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            step_losses += values[:bad]
            status = "diverged"
            error = (f"training diverged: the loss became {values[bad]} at epoch {epoch}, step {bad + 1} "
                     f"of {math.ceil(len(x_train) / tc.batch_size)}; try a lower learning rate, "
                     f"grad_clip or standardize")
            break
        step_losses += values
        if stop == "cancelled":
            status = "cancelled"
            break
        record = {"epoch": epoch, "train_loss": float(np.mean(values)), "val_loss": None, "val_accuracy": None}
        if "validation" in splits:
            x_val, y_val = splits["validation"]
            logits = _logits(model, x_val, tc.precision)
            val_loss, val_acc = torch.stack([F.cross_entropy(logits, y_val),
                                             (logits.argmax(1) == y_val).float().mean()]).tolist()
            record.update(val_loss=val_loss if math.isfinite(val_loss) else None, val_accuracy=val_acc)
        if "validation_shift" in splits:
            x_shift, y_shift = splits["validation_shift"]
            record["val_shift_accuracy"] = (_logits(model, x_shift, tc.precision).argmax(1) == y_shift).float().mean().item()
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        state = _cpu(model.state_dict())
        if (tc.select == "last" or best["epoch"] is None or record["val_accuracy"] is None
                or record["val_accuracy"] > best["val_accuracy"]):
            best = {"epoch": epoch, "val_accuracy": record["val_accuracy"], "model": state}
        if checkpoints:
            states = {"shuffle": gen.get_state(), "torch": rng.cpu_state, "cuda": rng.cuda_state}
            hooks.on_epoch(dict(record), {"epoch": epoch, "model": state, "optimizer": _cpu(optimizer.state_dict()),
                                          "history": [dict(r) for r in history], "step_losses": list(step_losses),
                                          "best": dict(best), "rng": states})

    metrics, predictions = {}, {}
    if best["model"] is not None:
        model.load_state_dict(best["model"])
        for name in EVAL_SPLITS:
            if name in splits:
                x, y = splits[name]
                probs = torch.softmax(_logits(model, x, tc.precision), dim=1).cpu().numpy()  # (n, classes)
                y_np = y.cpu().numpy()
                metrics[name] = evaluate(y_np, probs)
                predictions[name] = {"ids": list(data[name].ids), "y": y_np.tolist(),
                                     "probs": np.round(probs, 6).tolist()}
    return TrainResult(
        status=status, history=history, step_losses=step_losses, metrics=metrics, predictions=predictions,
        best_epoch=best["epoch"], state_dict=best["model"] or {},
        standardizer=None if scale is None else {"mean": scale[0].tolist(), "std": scale[1].tolist()},
        device=device, error=error, warning=learning_warning(history) if status == "finished" else None,
    )
