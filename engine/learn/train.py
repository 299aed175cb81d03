"""One readable training loop: `train_run(config, data) -> TrainResult`.

All splits go to the device once as tensors; batches are index slices of a shuffled order
drawn from a seeded `torch.Generator` (no DataLoader, no per-item Python). Step losses stay
on the device and are read once per epoch, so a step costs no host sync unless a hook asks
for its loss. Same seed + config + data on CPU -> identical numbers, also across a resume.

Each run draws its dropout masks from its own `torch.Generator` on the training device
(`model.Dropout`; a multi-layer sequence LSTM trains layer by layer so that no mask comes
from cuDNN's internal generator), so runs training at once in one process get the masks
each gets alone, with no lock. Only the initial weights come from torch's global generator,
seeded under a lock once per run.

On a GPU the same holds for batch order and masks, but not bit for bit for the arithmetic:
cuBLAS/cuDNN may pick different kernels or reduction orders between runs (this engine does
not set `torch.use_deterministic_algorithms`, which would slow the LSTM), so two CUDA runs
with one seed agree to float rounding, not exactly, and a resumed CUDA run continues the
same training to rounding. See docs/PERFORMANCE.md, "Reproducibility".
"""

from __future__ import annotations

import contextlib
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

from ..core.config import RunConfig, TrainConfig
from ..features.extract import fit_standardizer
from ..core.errors import ConfigError
from ..core.labels import NUM_CLASSES
from .metrics import CROSS_VALIDATION_KEYS, EPOCH_SPLITS, EVAL_SPLITS, evaluate
from .model import autocast, build_model, set_dropout_generator
from .ood import captured_embeddings, clip_statistics
from .trust import fit_reference, fit_trust

EVAL_BATCH = 1024  # clips per forward pass when evaluating
OUTLIERS = "outliers"  # data key of the outlier-exposure clips (FeatureSet, y all -1; engine.features.outliers)
AUGMENTED = "training_augmented"  # data key of the augmented training views (FeatureSet, x (views, n, frames, features))
_GLOBAL_RNG_LOCK = threading.Lock()  # whoever holds it may seed, draw from or swap torch's global generators


def dropout_seed(seed: int) -> int:
    """The seed of a run's dropout generator: derived from the run's seed, distinct from the
    batch-order generator's (which is seeded with `seed` itself)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


_SHARED: dict[tuple, list] = {}  # (id of the features, device, scale) -> [source array, (x, y), users]
_SHARED_LOCK = threading.Lock()


@contextmanager
def shared_split(fs: Any, scale: tuple[np.ndarray, np.ndarray] | None, device: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A FeatureSet on `device` as in `_to_device`, one copy shared by every run that uses the
    same features with the same scaling at the same time; freed when the last one is done.
    Callers must not modify the tensors."""
    source = fs.x
    key = (id(source), str(device), None if scale is None else (scale[0].tobytes(), scale[1].tobytes()))
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is None or entry[0] is not source:
            entry = _SHARED[key] = [source, _to_device(fs, scale, device), 0]
        entry[2] += 1
    try:
        yield entry[1]
    finally:
        with _SHARED_LOCK:
            entry[2] -= 1
            if entry[2] == 0 and _SHARED.get(key) is entry:
                del _SHARED[key]


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
    group: dict | None = None  # trained in a group (engine.learn.batched): {"size", "seeds", "member"}
    ood_reference: dict | None = None  # what the OOD score measures against, from training clips (engine.learn.trust.fit_reference: kNN {"embeddings"})


class TrainHooks:
    """A run's callbacks; every one is optional and the defaults do nothing.

    Subclass and override, or pass callables: `TrainHooks(on_epoch=save, should_stop=ev.is_set)`.
    - on_step(epoch, step, steps_per_epoch, loss): epoch and step 1-based. Called every
      `step_every` steps and at each epoch's last step, and only when provided: reading the
      loss is a host sync, so keep step_every > 1 on a GPU.
    - on_epoch(record, checkpoint): after each epoch; `checkpoint` is the `resume=` dict:
      {"epoch", "model", "optimizer", "history", "step_losses", "best", "rng"} (CPU copies)
      when `checkpoint_due(epoch)` said True; else only {"epoch", "history", "step_losses"}
      (the model and optimizer are then not copied to the host).
    - checkpoint_due(epoch) -> bool: asked once per epoch, just before on_epoch.
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

    def checkpoint_due(self, epoch: int) -> bool:
        return True


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


def make_optimizer(model: nn.Module | list[torch.Tensor], tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam, SGD (with momentum) or Adadelta (rho, eps) over the model's parameters (or a list
    of tensors: a group's stacked parameters, `engine.learn.batched`).

    Adam and SGD use their fused kernels (one pass over all parameters per step, on CPU and
    CUDA): the same update, measured 1.5x faster per epoch than the default for the study model.
    """
    params, wd = (model.parameters() if isinstance(model, nn.Module) else model), tc.weight_decay
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=wd, fused=True)
    if tc.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=tc.lr, rho=tc.rho, eps=tc.eps, weight_decay=wd, foreach=True)
    return torch.optim.Adam(params, lr=tc.lr, weight_decay=wd, fused=True)


def _check_data(config: RunConfig, data: dict) -> None:
    if "training" not in data or len(data["training"].y) == 0:
        raise ConfigError("no clips in the 'training' split: training needs at least one")
    fc = config.features
    if AUGMENTED in data:
        views = np.asarray(data[AUGMENTED].x)
        if views.ndim != 4 or views.shape[1:] != np.asarray(data["training"].x).shape:
            raise ConfigError(f"augmented views have shape {views.shape}; expected (views, *{data['training'].x.shape})")
    if config.train.outlier_exposure > 0 and (OUTLIERS not in data or not len(data[OUTLIERS].x)):
        raise ConfigError("outlier exposure needs the outlier clips (engine.features.outliers), and none were given")
    for name, fs in data.items():
        if name == AUGMENTED:
            continue
        x, y = fs.x, np.asarray(fs.y)
        if x.ndim != 3 or x.shape[2] != fc.feature_dim or len(y) != len(x):
            raise ConfigError(f"{name} features have shape {x.shape} for {len(y)} labels; "
                              f"the configuration expects (clips, frames, {fc.feature_dim})")
        if config.model.arch.startswith("study") and x.shape[1] != fc.num_frames:
            raise ConfigError(f"{name} features have {x.shape[1]} frames; the study model expects {fc.num_frames}")
        classes = len(config.class_names)
        if name != OUTLIERS and len(y) and (y.min() < 0 or y.max() >= classes):
            raise ConfigError(f"{name} labels must be class ids 0..{classes - 1} ({classes} classes: "
                              f"{', '.join(config.class_names[:8])}{', ...' if classes > 8 else ''})")


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


def mixup_partners(batch: int, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Mixup's draw for one batch: (partner (batch,) a permutation of 0..batch-1, lam ~ Beta(alpha, alpha)).

    Both come from `gen` (lam through a numpy generator seeded from it), so a run stays
    reproducible and resumable."""
    partner = torch.randperm(batch, generator=gen)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return partner, float(np.random.default_rng(seed).beta(alpha, alpha))


def _loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
          mix: tuple[torch.Tensor, float] | None) -> torch.Tensor:
    """Cross-entropy of logits (batch, classes) against y (batch,); with mixup's (partner, lam),
    lam CE(y) + (1 - lam) CE(y[partner])."""
    loss = F.cross_entropy(logits, y, weight=weight)
    if mix is None:
        return loss
    partner, lam = mix
    return lam * loss + (1.0 - lam) * F.cross_entropy(logits, y[partner.to(y.device)], weight=weight)


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure's loss: the mean cross-entropy of logits (batch, classes) to the uniform
    distribution, -mean over clips and classes of log softmax (log(classes) at its minimum)."""
    return -torch.log_softmax(logits.float(), dim=1).mean()


def _train_epoch(model, optimizer, x, y, weight, tc, gen, hooks, epoch, report,
                 views=None, outliers=None) -> tuple[torch.Tensor, str | None]:
    """One pass over (x, y) in shuffled batches (clips drawn from `views` (views, n, frames,
    features) too, when given; each batch joined by as many clips drawn from `outliers` (n_out,
    frames, features) with outlier exposure, whose term is left out of the step losses, so that
    they stay the classification loss). Returns the step losses (steps,) on the device and
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
        mix = mixup_partners(len(idx), tc.mixup, gen) if tc.mixup > 0 else None
        if mix is not None:
            xb = mix[1] * xb + (1.0 - mix[1]) * xb[mix[0].to(xb.device)]
        if outliers is not None:
            pick = torch.randint(0, len(outliers), (len(idx),), generator=gen).to(outliers.device)
            xb = torch.cat([xb, outliers[pick]])  # (2 * batch, frames, features): clips, then outliers
        with autocast(str(x.device), tc.precision):
            logits = model(xb)  # (batch, classes), or (2 * batch, classes) with outliers
            loss = _loss(logits[:len(idx)], y[idx], weight, mix)  # float32 under autocast; what the curves show
            objective = loss if outliers is None else loss + tc.outlier_exposure * uniform_cross_entropy(logits[len(idx):])
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
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


def init_member(config: RunConfig, device: str) -> tuple[nn.Module, torch.Generator]:
    """A run's model with its seeded initial weights on `device`, and its dropout generator
    (set on the model's `Dropout`s). The global generator is seeded under a lock, once."""
    with _GLOBAL_RNG_LOCK:
        torch.manual_seed(config.train.seed)  # initial weights
        model = build_model(config.model, config.features, num_classes=len(config.class_names)).to(device)
    drops = torch.Generator(device=device).manual_seed(dropout_seed(config.train.seed))
    set_dropout_generator(model, drops)
    return model, drops


def validation_record(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """{"val_loss", "val_accuracy"} of logits (n, classes) against labels (n,): one host sync."""
    val_loss, val_acc = torch.stack([F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()]).tolist()
    return {"val_loss": val_loss if math.isfinite(val_loss) else None, "val_accuracy": val_acc}


def divergence_message(value: float, epoch: int, step: int, steps: int) -> str:
    """What a run whose loss became `value` at (epoch, step of steps), 1-based, reports."""
    return (f"training diverged: the loss became {value} at epoch {epoch}, step {step} of {steps}; "
            f"try a lower learning rate, grad_clip or standardize")


def is_better(select: str, best: dict, record: dict) -> bool:
    """Whether epoch `record` replaces `best` as the selected epoch (`TrainConfig.select`)."""
    return (select == "last" or best["epoch"] is None or record["val_accuracy"] is None
            or record["val_accuracy"] > best["val_accuracy"])


def final_evaluation(model: nn.Module, state: dict | None, data: dict[str, Any], scale, device: str,
                     precision: str) -> tuple[dict, dict, dict | None]:
    """(metrics, predictions, ood_reference) of `model` with weights `state` on EVAL_SPLITS (those
    present and non-empty); each split goes to the device only now (shared with runs that hold it
    there). metrics also holds "calibration" and "ood" (engine.learn.trust.fit_trust, from the raw
    logits and embeddings); ood_reference: engine.learn.trust.fit_reference of the training clips.
    ({}, {}, None) when state is None."""
    metrics, predictions, raw, embedded = {}, {}, {}, {}
    if state is None:
        return metrics, predictions, None
    model.load_state_dict(state)
    for name in EVAL_SPLITS:
        if name in data and len(data[name].y):
            logits, embedded[name] = _logits_and_embeddings(model, data[name], scale, device, precision)
            probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()  # (n, classes)
            y_np = np.asarray(data[name].y, dtype=np.int64)
            metrics[name] = evaluate(y_np, probs)
            predictions[name] = {"ids": list(data[name].ids), "y": y_np.tolist(), "probs": np.round(probs, 6).tolist()}
            raw[name] = (logits, y_np)
    # issue #24: metrics["calibration"] and metrics["ood"], fitted on validation (OOD: against training clips)
    statistics = {name: clip_statistics(data[name].x) for name in (*raw, "training")}  # unscaled inputs
    validation = (embedded["validation"], statistics["validation"]) if "validation" in raw else None
    reference = fit_reference(_logits_and_embeddings(model, data["training"], scale, device, precision)[1],
                              np.asarray(data["training"].y), statistics=statistics["training"], validation=validation)
    metrics.update(fit_trust(raw, embedded, reference, statistics))
    return metrics, predictions, reference


def _logits_and_embeddings(model: nn.Module, fs: Any, scale, device: str, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, classes) and embeddings (n, dim) float32 on the host of a FeatureSet, in one pass."""
    with shared_split(fs, scale, device) as (x, _), captured_embeddings(model) as parts:
        logits = _logits(model, x, precision).cpu().numpy()
    return logits, torch.cat(parts).cpu().numpy()


def standardizer_of(config: RunConfig, data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) per feature of the training split when the run standardizes, else None."""
    return fit_standardizer(np.asarray(data["training"].x, dtype=np.float32)) if config.train.standardize else None


def loss_weight(config: RunConfig, data: dict[str, Any], device: str) -> torch.Tensor | None:
    """The cross-entropy class weights (classes,) on `device`, or None without class_weighting."""
    if not config.train.class_weighting:
        return None
    return torch.as_tensor(class_weights(np.asarray(data["training"].y), len(config.class_names))).to(device)


def train_run(config: RunConfig, data: dict[str, Any], *, device: str | None = None,
              hooks: TrainHooks | None = None, resume: dict | None = None) -> TrainResult:
    """Train `config` on data["training"], validate each epoch on data["validation"] (if
    present), then evaluate the selected epoch's model on validation and test (if present).

    `data`: split name -> FeatureSet (only .x, .y, .ids are used): "training", optionally
    "validation", "validation_shift", "validation_source" and "validation_program" (the cross-collection
    validations of the channel, of the source and of held-out programs, evaluated each epoch and at the end, never used to select) and "test", and AUGMENTED (x: the training clips'
    augmented views, (views, n, frames, features), drawn from in every batch) and OUTLIERS (the
    outlier-exposure clips, with train.outlier_exposure). `device`: default "cuda"
    when available, else "cpu". `resume`: a checkpoint given to hooks.on_epoch; training
    continues from its epoch + 1 and ends as an uninterrupted run with the same seed would.
    The validation loss is unweighted cross-entropy even with class_weighting.
    Training and validation features are shared on the device with other runs on the same
    data (`shared_split`); test goes there only for the final evaluation.
    """
    hooks = hooks or TrainHooks()
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_data(config, data)
    scale = standardizer_of(config, data)
    views = _scaled(data[AUGMENTED].x, scale, device) if AUGMENTED in data else None  # (views, n, frames, features)
    exposure = config.train.outlier_exposure > 0
    outliers = _scaled(data[OUTLIERS].x, scale, device) if exposure else None  # (n_out, frames, features)
    with contextlib.ExitStack() as stack:
        x_train, y_train = stack.enter_context(shared_split(data["training"], scale, device))
        evals = shared_evaluation_splits(stack, data, scale, device)
        status, error, history, step_losses, model, best = _train_loop(
            config, x_train, y_train, views, evals, loss_weight(config, data, device), device, hooks, resume,
            outliers)
    metrics, predictions, reference = final_evaluation(model, best["model"], data, scale, device, config.train.precision)
    return TrainResult(ood_reference=reference,
        status=status, history=history, step_losses=step_losses, metrics=metrics, predictions=predictions,
        best_epoch=best["epoch"], state_dict=_cpu(best["model"]) if best["model"] is not None else {},
        standardizer=None if scale is None else {"mean": scale[0].tolist(), "std": scale[1].tolist()},
        device=device, error=error,
        warning=learning_warning(history, len(config.class_names)) if status == "finished" else None,
    )


def shared_evaluation_splits(stack: contextlib.ExitStack, data: dict[str, Any], scale, device: str) -> dict:
    """The per-epoch evaluation splits present and non-empty, name -> (x, y) shared on the device
    for as long as `stack` is open."""
    return {name: stack.enter_context(shared_split(data[name], scale, device))
            for name in EPOCH_SPLITS if name in data and len(data[name].y)}


def epoch_record(epoch: int, values: list[float], logits: dict[str, torch.Tensor], evals: dict) -> dict:
    """An epoch's history record from its step losses and the logits (n, classes) of each
    per-epoch evaluation split (name -> logits; their labels in evals[name][1])."""
    record = {"epoch": epoch, "train_loss": float(np.mean(values)), "val_loss": None, "val_accuracy": None}
    if "validation" in logits:
        record.update(validation_record(logits["validation"], evals["validation"][1]))
    for split, key in CROSS_VALIDATION_KEYS.items():
        if split in logits:
            record[key] = (logits[split].argmax(1) == evals[split][1]).float().mean().item()
    return record


def _train_loop(config, x_train, y_train, views, evals, weight, device, hooks, resume, outliers=None):
    """The epochs of `train_run`: (status, error, history, step_losses, model, best), where
    best["model"] is the selected epoch's state_dict (on the device)."""
    tc = config.train
    model, drops = init_member(config, device)
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
        if "dropout" in resume["rng"]:  # checkpoints from before per-run generators continue with fresh masks
            drops.set_state(resume["rng"]["dropout"])
    report, checkpoints = _provides(hooks, "on_step"), _provides(hooks, "on_epoch")
    status, error = "finished", None
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)

    for epoch in range(len(history) + 1, tc.epochs + 1):
        losses, stop = _train_epoch(model, optimizer, x_train, y_train, weight, tc, gen, hooks, epoch, report, views,
                                    outliers)
        values = losses.tolist()  # the epoch's one host sync for training losses
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            step_losses += values[:bad]
            status = "diverged"
            error = divergence_message(values[bad], epoch, bad + 1, math.ceil(len(x_train) / tc.batch_size))
            break
        step_losses += values
        if stop == "cancelled":
            status = "cancelled"
            break
        record = epoch_record(epoch, values, {name: _logits(model, x, tc.precision) for name, (x, _) in evals.items()},
                              evals)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if is_better(tc.select, best, record):
            best = {"epoch": epoch, "val_accuracy": record["val_accuracy"], "model": _snapshot(model)}
        if checkpoints:
            checkpoint = {"epoch": epoch, "history": [dict(r) for r in history], "step_losses": list(step_losses)}
            if hooks.checkpoint_due(epoch):  # only then the host copy of the weights (and its sync)
                checkpoint.update(model=_cpu(model.state_dict()), optimizer=_cpu(optimizer.state_dict()), best=_cpu(best),
                                  rng={"shuffle": gen.get_state(), "dropout": drops.get_state()})
            hooks.on_epoch(dict(record), checkpoint)
    return status, error, history, step_losses, model, best



def _snapshot(model: nn.Module) -> dict:
    """A copy of the model's state_dict on its own device (no host transfer, no sync)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
