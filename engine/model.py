"""The networks: an LSTM classifier per `ModelConfig.arch`. The model knows nothing of training.

Every model maps x (batch, frames, features) float32 -> logits (batch, num_classes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import FeatureConfig, ModelConfig
from .labels import NUM_CLASSES


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
        self.extra = nn.LSTM(hidden, extra_hidden, batch_first=True) if extra_hidden else None
        self.head = nn.Linear(extra_hidden or hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = one_step(self.lstm, x.reshape(x.shape[0], -1))  # (batch, frames*features) -> (batch, hidden)
        if self.extra is not None:
            h = one_step(self.extra, h)  # (batch, extra_hidden)
        return self.head(h)  # (batch, classes)


def one_step(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """`lstm` over ONE time step from a zero state: x (batch, inputs) -> last layer's h (batch, hidden).

    The same function as `lstm(x[:, None])[0][:, 0]`, but with h0 = c0 = 0 the recurrent
    products W_hh @ h0 and the forget gate's f * c0 vanish, so they are skipped (about 3/4 of
    the study model's arithmetic); the weights stay those of the nn.LSTM (same state_dict;
    W_hh and the forget-gate rows of W_ih unused). Under autocast the matrix products run in
    the autocast dtype (bfloat16 on a CPU) and everything else in float32.
    """
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
    for layer in range(lstm.num_layers):
        if layer > 0:
            x = F.dropout(x, lstm.dropout, lstm.training)  # between layers, as nn.LSTM does
        w = getattr(lstm, f"weight_ih_l{layer}")  # (4*hidden, inputs): gates i, f, g, o
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        x = _ZeroStateCell.apply(x, w, b, dtype)  # (batch, hidden)
    return x


class _ZeroStateCell(torch.autograd.Function):
    """One LSTM cell step from h0 = c0 = 0, with its backward written out.

    forward(x (batch, in), w (4H, in), b (4H,), dtype) -> h (batch, H), float32:
        i, g, o = sigmoid(x w_i + b_i), tanh(x w_g + b_g), sigmoid(x w_o + b_o)
        h = o * tanh(i * g)
    w and b are an nn.LSTM layer's W_ih and b_ih + b_hh (gate rows i, f, g, o); the forget
    rows take no part and get a zero gradient, written into one buffer (autograd's slicing
    would zero a full (4H, in) buffer per slice: a fifth of the study model's step time).
    `dtype`: the matrix products' dtype (None: the inputs' own).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        hidden = w.shape[0] // 4
        with torch.autocast(x.device.type, enabled=False):
            xd, wd = (x, w) if dtype is None else (x.to(dtype), w.to(dtype))
            w_i, w_go = wd[:hidden], wd[2 * hidden:]
            i = torch.addmm(b[:hidden].to(wd.dtype), xd, w_i.t()).float().sigmoid_()
            go = torch.addmm(b[2 * hidden:].to(wd.dtype), xd, w_go.t()).float()
            g, o = _tanh(go[:, :hidden]), go[:, hidden:].sigmoid()
            tanh_c = _tanh(i * g)
            ctx.save_for_backward(xd, w_i, w_go, i, g, o, tanh_c)
            ctx.input_dtype = x.dtype
            return o * tanh_c

    @staticmethod
    def backward(ctx, dh: torch.Tensor) -> tuple:
        xd, w_i, w_go, i, g, o, tanh_c = ctx.saved_tensors
        hidden = i.shape[1]
        dc = dh * o * (1 - tanh_c * tanh_c)  # (batch, H)
        dz_i = (dc * g * i * (1 - i)).to(xd.dtype)  # pre-activation gradients
        dz_go = torch.cat([dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)], dim=1).to(xd.dtype)  # (batch, 2H)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.mm(dz_i, w_i).addmm_(dz_go, w_go).to(ctx.input_dtype)  # (batch, in)
        if ctx.needs_input_grad[1]:
            dw = torch.empty(4 * hidden, xd.shape[1], dtype=torch.float32, device=xd.device)
            dw[hidden:2 * hidden] = 0
            for rows, dz in ((slice(0, hidden), dz_i), (slice(2 * hidden, None), dz_go)):
                if dz.dtype == dw.dtype:
                    torch.mm(dz.t(), xd, out=dw[rows])
                else:
                    dw[rows] = torch.mm(dz.t(), xd)
        if ctx.needs_input_grad[2]:
            zeros = torch.zeros(hidden, dtype=torch.float32, device=xd.device)
            db = torch.cat([dz_i.float().sum(0), zeros, dz_go.float().sum(0)])
        return dx, dw, db, None


def _tanh(z: torch.Tensor) -> torch.Tensor:
    """tanh(z) as 2 sigmoid(2z) - 1 (absolute error ~1e-7): torch's CPU tanh is ~4x slower than its sigmoid."""
    return torch.sigmoid(2 * z).mul_(2).sub_(1)


class SequenceLSTM(nn.Module):
    """An LSTM that reads the clip frame by frame, pools over time, then dropout + linear head.

    `project`: first normalise each frame (LayerNorm) and project it to `hidden` values
    (used for raw-waveform frames of 512 samples). `pooling`: "last" (final hidden state of
    the last layer, both directions when bidirectional), "mean" or "max" over frames.
    """

    def __init__(self, inputs: int, hidden: int, num_layers: int, dropout: float, num_classes: int,
                 bidirectional: bool = False, pooling: str = "last", project: bool = False) -> None:
        super().__init__()
        self.pooling = pooling
        self.frame = (nn.Sequential(nn.LayerNorm(inputs), nn.Linear(inputs, hidden), nn.GELU())
                      if project else nn.Identity())
        self.lstm = nn.LSTM(hidden if project else inputs, hidden, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.frame(x)  # (batch, frames, inputs or hidden)
        out, (h, _) = self.lstm(x)  # out (batch, frames, dirs*hidden); h (layers*dirs, batch, hidden)
        if self.pooling == "last":
            dirs = 2 if self.lstm.bidirectional else 1
            pooled = h[-dirs:].transpose(0, 1).reshape(x.shape[0], -1)  # (batch, dirs*hidden)
        elif self.pooling == "mean":
            pooled = out.mean(dim=1)
        else:
            pooled = out.amax(dim=1)
        return self.head(self.drop(pooled))  # (batch, classes)


def autocast(device: str, precision: str) -> torch.autocast:
    """The context to run a model in for `TrainConfig.precision` on `device` ("float32": a no-op)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def build_model(model: ModelConfig, features: FeatureConfig, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The network for `model` over inputs shaped by `features`: (batch, num_frames, feature_dim)."""
    m, dim = model, features.feature_dim
    if m.arch in ("study", "study_2plus1"):
        extra = m.extra_hidden if m.arch == "study_2plus1" else None
        return StudyLSTM(features.num_frames * dim, m.hidden_size, m.num_layers, m.dropout, num_classes, extra)
    return SequenceLSTM(dim, m.hidden_size, m.num_layers, m.dropout, num_classes,
                        bidirectional=m.bidirectional, pooling=m.pooling, project=m.arch == "waveform")
