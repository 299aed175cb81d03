"""The networks: an LSTM classifier per `ModelConfig.arch` (and a linear baseline on clip
statistics). The model knows nothing of training.

Every model maps x (batch, frames, features) float32 -> logits (batch, num_classes).
"""

from __future__ import annotations

import contextlib
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.config import FeatureConfig, ModelConfig
from ..core.labels import NUM_CLASSES


class StudyLSTM(nn.Module):
    """The study's model: all frames flattened into ONE time step, an LSTM, a linear head.

    `extra_hidden` set -> the study's "2+1": a second single-layer LSTM hidden -> extra_hidden
    between the first LSTM and the head.
    """

    def __init__(self, inputs: int, hidden: int, num_layers: int, dropout: float,
                 num_classes: int, extra_hidden: int | None = None) -> None:
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, num_layers, dropout=dropout if num_layers > 1 else 0.0,
                            batch_first=True)
        self.between = Dropout(self.lstm.dropout)  # between LSTM layers, from the run's own generator
        self.extra = nn.LSTM(hidden, extra_hidden, batch_first=True) if extra_hidden else None
        self.head = nn.Linear(extra_hidden or hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = one_step(self.lstm, x.reshape(x.shape[0], -1), self.between)  # (batch, frames*features) -> (batch, hidden)
        if self.extra is not None:
            h = one_step(self.extra, h)  # (batch, extra_hidden)
        return self.head(h)  # (batch, classes)


def one_step(lstm: nn.LSTM, x: torch.Tensor, drop: "Dropout | None" = None) -> torch.Tensor:
    """`lstm` over ONE time step from a zero state: x (batch, inputs) -> last layer's h (batch, hidden).

    The same function as `lstm(x[:, None])[0][:, 0]`, but with h0 = c0 = 0 the recurrent
    products W_hh @ h0 and the forget gate's f * c0 vanish, so they are skipped (about 3/4 of
    the study model's arithmetic); the weights stay those of the nn.LSTM (same state_dict;
    W_hh and the forget-gate rows of W_ih unused). Under `autocast` the products run in bfloat16.
    `drop`: the dropout between layers (default: `F.dropout` at `lstm.dropout`, global generator).
    """
    hidden = lstm.hidden_size
    for layer in range(lstm.num_layers):
        if layer > 0:
            x = drop(x) if drop is not None else F.dropout(x, lstm.dropout, lstm.training)  # as nn.LSTM does
        w = getattr(lstm, f"weight_ih_l{layer}")  # (4*hidden, inputs): gates i, f, g, o
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        if torch.is_grad_enabled() and w.requires_grad:
            device_type = x.device.type
            cast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
            i, go = _GateRows.apply(x, w, b, hidden, cast)
        else:  # inference: no backward to save
            i, go = F.linear(x, w[:hidden], b[:hidden]), F.linear(x, w[2 * hidden:], b[2 * hidden:])
        g, o = go.chunk(2, dim=1)  # i, g, o: (batch, hidden)
        x = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))  # (batch, hidden)
    return x


class _GateRows(torch.autograd.Function):
    """Gates i and (g, o) of one LSTM step: x (batch, inputs), w (4*hidden, inputs), b (4*hidden,)
    -> i (batch, hidden), go (batch, 2*hidden); the forget-gate rows are not used.

    The same products as `F.linear` on the row slices w[:hidden] and w[2*hidden:] (bit for bit,
    also under autocast: `cast` is autocast's dtype, or None), but the backward writes the weight
    gradient in place: autograd's backward of each slice zero-fills a fresh full-size
    (4*hidden, inputs) buffer and copies the slice into it, then adds the two buffers
    (measured: `fill_` alone was 27% of a study-base run's time in float32 and 22% in bfloat16
    on a 2-core CPU, docs/PERFORMANCE.md). Here one buffer is allocated, its forget-gate rows
    zeroed (their gradient, as alone) and the two products written into their rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, hidden: int,
                cast: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = hidden
        x_c, w_i, w_go, b_i, b_go = x, w[:h], w[2 * h:], b[:h], b[2 * h:]
        if cast is not None:  # what autocast does to each F.linear's inputs (x cast once per product)
            x_c, w_i, w_go, b_i, b_go = (t.to(cast) for t in (x_c, w_i, w_go, b_i, b_go))
        ctx.save_for_backward(x_c, w_i, w_go)
        ctx.hidden, ctx.shapes = hidden, (x.dtype, w.shape, w.dtype, b.dtype)
        ctx.one_cast = cast is not None and x.is_leaf and x.requires_grad  # autocast casts such an x once (its cache)
        return F.linear(x_c, w_i, b_i), F.linear(x_c, w_go, b_go)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_i: torch.Tensor, d_go: torch.Tensor) -> tuple:
        x_c, w_i, w_go = ctx.saved_tensors
        h, (x_dtype, w_shape, w_dtype, b_dtype) = ctx.hidden, ctx.shapes
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # (batch, inputs), summed in the dtype autograd sums it in
            if ctx.one_cast:
                dx = (d_i.mm(w_i) + d_go.mm(w_go)).to(x_dtype)
            else:
                dx = d_i.mm(w_i).to(x_dtype) + d_go.mm(w_go).to(x_dtype)
        if ctx.needs_input_grad[1]:
            dw = torch.empty(w_shape, dtype=w_dtype, device=d_i.device)  # (4*hidden, inputs)
            dw[h:2 * h].zero_()
            if x_c.dtype == w_dtype:
                torch.mm(d_i.t(), x_c, out=dw[:h])
                torch.mm(d_go.t(), x_c, out=dw[2 * h:])
            else:
                dw[:h].copy_(d_i.t().mm(x_c))
                dw[2 * h:].copy_(d_go.t().mm(x_c))
        if ctx.needs_input_grad[2]:
            db = torch.cat([d_i.sum(0).to(b_dtype), d_i.new_zeros(h, dtype=b_dtype), d_go.sum(0).to(b_dtype)])
        return dx, dw, db, None, None


class SequenceLSTM(nn.Module):
    """An LSTM that reads the clip frame by frame, pools over time, then dropout + linear head.

    `project`: first normalise each frame (LayerNorm) and project it to `hidden` values
    (used for raw-waveform frames of 512 samples). `pooling`: "last" (final hidden state of
    the last layer, both directions when bidirectional), "mean" or "max" over frames, or
    "stats": mean and standard deviation over frames side by side (x-vector statistics pooling).
    """

    def __init__(self, inputs: int, hidden: int, num_layers: int, dropout: float, num_classes: int,
                 bidirectional: bool = False, pooling: str = "last", project: bool = False) -> None:
        super().__init__()
        self.pooling = pooling
        self.frame = (nn.Sequential(nn.LayerNorm(inputs), nn.Linear(inputs, hidden), nn.GELU())
                      if project else nn.Identity())
        self.lstm = nn.LSTM(hidden if project else inputs, hidden, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.between = Dropout(self.lstm.dropout)  # between LSTM layers (see `_layers`)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1) * (2 if pooling == "stats" else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.frame(x)  # (batch, frames, inputs or hidden)
        off = lstm_outside_autocast(x.device.type)
        with torch.autocast(x.device.type, enabled=False) if off else contextlib.nullcontext():
            out, h = self._layers(x.float() if off else x)  # out (batch, frames, dirs*hidden); h (layers*dirs, batch, hidden)
        if self.pooling == "last":
            dirs = 2 if self.lstm.bidirectional else 1
            pooled = h[-dirs:].transpose(0, 1).reshape(x.shape[0], -1)  # (batch, dirs*hidden)
        elif self.pooling == "mean":
            pooled = out.mean(dim=1)
        elif self.pooling == "stats":  # mean and std over frames (statistics pooling)
            pooled = torch.cat([out.mean(dim=1), out.std(dim=1, unbiased=False)], dim=1)  # (batch, 2*dirs*hidden)
        else:
            pooled = out.amax(dim=1)
        return self.head(self.drop(pooled))  # (batch, classes)

    def _layers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM's outputs and last hidden states. Training with dropout between layers runs
        it one layer at a time (same weights, same function as nn.LSTM) so that the masks come
        from `self.between` (the run's generator; cuDNN's fused dropout cannot take one)."""
        lstm = self.lstm
        if not (self.training and lstm.dropout > 0 and lstm.num_layers > 1):
            out, (h, _) = lstm(x)
            return out, h
        dirs, hs = 2 if lstm.bidirectional else 1, []
        for layer in range(lstm.num_layers):
            if layer > 0:
                x = self.between(x)
            names = [f"{kind}_l{layer}{suffix}" for suffix in ("", "_reverse")[:dirs]
                     for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            zeros = x.new_zeros(dirs, x.shape[0], lstm.hidden_size)
            x, h, _ = torch._VF.lstm(x, (zeros, zeros), [getattr(lstm, n) for n in names], True, 1, 0.0,
                                     True, lstm.bidirectional, True)  # nn.LSTM's own kernel, one layer
            hs.append(h)
        return x, torch.cat(hs)


class ClipStatsLinear(nn.Module):
    """A linear classifier on clip statistics: each feature's mean and standard deviation over
    the frames, (batch, 2 * inputs), then dropout and the linear `head` (logistic regression)."""

    def __init__(self, inputs: int, dropout: float, num_classes: int) -> None:
        super().__init__()
        self.drop = Dropout(dropout)
        self.head = nn.Linear(2 * inputs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = torch.cat([x.mean(dim=1), x.std(dim=1, unbiased=False)], dim=1)  # (batch, 2*inputs)
        return self.head(self.drop(stats))  # (batch, classes)


class Dropout(nn.Module):
    """nn.Dropout whose masks come from `self.generator` (a torch.Generator on the input's
    device) when one is set, so that a run's masks depend on its seed only, whatever else
    the process is training; None: torch's global generator, as nn.Dropout."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            return F.dropout(x, self.p, True)
        return x * dropout_mask(x.shape, self.p, self.generator, x.dtype, x.device)


def dropout_mask(shape: tuple[int, ...], p: float, generator: torch.Generator, dtype: torch.dtype,
                 device: torch.device | str) -> torch.Tensor:
    """Inverted-dropout mask of `shape`: 0 with probability p, else 1 / (1 - p), drawn from `generator`."""
    return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every `Dropout` of `model` draw its masks from `generator` (None: the global one)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.generator = generator


def lstm_dtype(device_type: str, precision: str) -> torch.dtype:
    """The dtype `nn.LSTM` really computes in under `autocast(device, precision)` in this engine.

    CPU autocast runs the LSTM in bfloat16 when asked. CUDA autocast would run cuDNN's RNN in
    float16 whatever dtype it was given (no GradScaler: underflow risk), so on CUDA the LSTM
    is taken out of autocast and runs in float32; the frame projection and head around it
    still run in bfloat16. (The study models call no nn.LSTM kernel: see `one_step`.)
    """
    return torch.bfloat16 if precision == "bfloat16" and device_type == "cpu" else torch.float32


def lstm_outside_autocast(device_type: str) -> bool:
    """True when an nn.LSTM call must leave the active autocast and run in float32 (see `lstm_dtype`)."""
    return torch.is_autocast_enabled(device_type) and lstm_dtype(device_type, "bfloat16") == torch.float32


def autocast(device: str, precision: str) -> torch.autocast:
    """The context to run a model in for `TrainConfig.precision` on `device` ("float32": a no-op)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def fast_bfloat16(device: str) -> bool:
    """Whether `device` runs bfloat16 matrix products natively ("cuda": Ampere or newer; CPU:
    oneDNN's bfloat16 kernels, AVX-512 or newer), i.e. whether precision="bfloat16" can pay off."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_model(model: ModelConfig, features: FeatureConfig, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The network for `model` over inputs shaped by `features`: (batch, num_frames, feature_dim)."""
    m, dim = model, features.feature_dim
    if m.arch in ("study", "study_2plus1"):
        extra = m.extra_hidden if m.arch == "study_2plus1" else None
        return StudyLSTM(features.num_frames * dim, m.hidden_size, m.num_layers, m.dropout, num_classes, extra)
    if m.arch == "linear":
        return ClipStatsLinear(dim, m.dropout, num_classes)
    return SequenceLSTM(dim, m.hidden_size, m.num_layers, m.dropout, num_classes,
                        bidirectional=m.bidirectional, pooling=m.pooling, project=m.arch == "waveform")
