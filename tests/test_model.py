"""Model shapes for every architecture, the study model's exact layers, and metrics vs scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from engine.core.config import FeatureConfig, ModelConfig
from engine.learn.metrics import evaluate
from engine.learn.model import autocast, build_model, lstm_dtype, lstm_outside_autocast, set_dropout_generator


@pytest.mark.parametrize("arch", ["study", "study_2plus1", "sequence", "waveform", "linear"])
@pytest.mark.parametrize("bidirectional,pooling", [(False, "last"), (True, "last"), (True, "mean"), (False, "max")])
def test_every_arch_maps_batch_to_logits(arch: str, bidirectional: bool, pooling: str) -> None:
    features = FeatureConfig(representation="waveform", frames=4, waveform_frame=32) if arch == "waveform" else FeatureConfig()
    model = build_model(ModelConfig(arch=arch, hidden_size=16, num_layers=2, extra_hidden=5,
                                    bidirectional=bidirectional, pooling=pooling), features)
    x = torch.randn(7, features.num_frames, features.feature_dim)  # (batch, frames, features)
    logits = model(x)
    assert logits.shape == (7, 8)
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # every parameter takes part (the study's one step skips W_hh @ 0)
    unused = {n for n, _ in model.named_parameters() if arch.startswith("study") and "weight_hh" in n}
    assert all(p.grad is not None for n, p in model.named_parameters() if n not in unused)


def test_the_linear_model_is_logistic_regression_on_each_features_mean_and_spread() -> None:
    features = FeatureConfig(frames=None)
    model = build_model(ModelConfig(arch="linear", dropout=0.0), features).eval()
    assert [n for n, _ in model.named_parameters()] == ["head.weight", "head.bias"]
    assert model.head.in_features == 2 * features.feature_dim
    x = torch.randn(5, features.num_frames, features.feature_dim)
    stats = torch.cat([x.mean(dim=1), x.std(dim=1, unbiased=False)], dim=1)  # (5, 42)
    torch.testing.assert_close(model(x), stats @ model.head.weight.T + model.head.bias)
    torch.testing.assert_close(model(x[:, torch.randperm(x.shape[1])]), model(x), rtol=1e-5, atol=1e-5)  # frame order: none


def test_study_model_is_the_reports_network() -> None:
    model = build_model(ModelConfig(arch="study"), FeatureConfig())  # 3 frames x 21 features
    lstm = model.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.dropout) == (63, 500, 2, 0.1)
    assert (model.head.in_features, model.head.out_features) == (500, 8)
    plus = build_model(ModelConfig(arch="study_2plus1"), FeatureConfig())
    assert (plus.extra.input_size, plus.extra.hidden_size, plus.head.in_features) == (500, 30, 30)


@pytest.mark.parametrize("arch", ["study", "study_2plus1"])
def test_study_model_is_one_nn_lstm_step(arch: str) -> None:
    """Frames flattened into one step; the fast forward equals nn.LSTM's own on the 63 values."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, hidden_size=8, num_layers=3, dropout=0.0, extra_hidden=4), FeatureConfig())
    for p in model.parameters():  # non-zero biases and recurrent weights, to be sure W_hh is irrelevant
        torch.nn.init.normal_(p)
    x = torch.randn(5, 3, 21)
    out, _ = model.lstm(x.reshape(5, 1, 63))  # (batch, 1 step, hidden)
    if model.extra is not None:
        out, _ = model.extra(out)
    torch.testing.assert_close(model(x), model.head(out[:, 0]))


@pytest.mark.parametrize("arch", ["study", "study_2plus1"])
def test_study_model_gradients_equal_nn_lstms(arch: str) -> None:
    """The written-out backward of the one-step cell gives nn.LSTM's gradients; W_hh gets none."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, hidden_size=8, num_layers=3, dropout=0.0, extra_hidden=4), FeatureConfig())
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x, y = torch.randn(5, 3, 21), torch.tensor([0, 3, 7, 3, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    out, _ = model.lstm(x.reshape(5, 1, 63))
    if model.extra is not None:
        out, _ = model.extra(out)
    torch.nn.functional.cross_entropy(model.head(out[:, 0]), y).backward()
    reference = {n: p.grad for n, p in model.named_parameters()}
    assert set(reference) - set(ours) == {n for n in reference if "weight_hh" in n}
    for name, grad in ours.items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-6, msg=name)
    hidden = model.lstm.hidden_size
    assert not ours["lstm.weight_ih_l0"][hidden:2 * hidden].any()  # the forget gate takes no part


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("input_is_leaf", [True, False])
def test_study_step_backward_is_the_slices_backward_without_full_size_zero_fills(precision: str,
                                                                                  input_is_leaf: bool) -> None:
    """`one_step`'s backward gives bit for bit the gradients of F.linear on the gate-row slices
    (autograd's own backward, the engine's earlier code), also under bfloat16 autocast (whose
    casts it repeats, including the cached cast of a leaf input), and writes the weight gradient
    in place: no zero-filled (4*hidden, inputs) buffer per slice (22-27% of a study run's time)."""
    from torch.profiler import ProfilerActivity, profile

    from engine.learn.model import one_step
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(63, 40, 2)
    x = torch.randn(9, 63, requires_grad=True)
    weight = torch.randn(9, 40)

    def gradients(step) -> list[torch.Tensor]:
        lstm.zero_grad(set_to_none=True)
        x.grad = None
        with autocast("cpu", precision):
            out = step(lstm, x if input_is_leaf else x * 1.0)
        (out.float() * weight).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for n, p in lstm.named_parameters() if "weight_hh" not in n]

    def sliced(lstm: torch.nn.LSTM, x: torch.Tensor) -> torch.Tensor:  # the written-out reference
        h = lstm.hidden_size
        for layer in range(lstm.num_layers):
            w = getattr(lstm, f"weight_ih_l{layer}")
            b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            i = torch.nn.functional.linear(x, w[:h], b[:h])
            g, o = torch.nn.functional.linear(x, w[2 * h:], b[2 * h:]).chunk(2, dim=1)
            x = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
        return x

    for ours, reference in zip(gradients(one_step), gradients(sliced)):
        assert torch.equal(ours, reference)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        gradients(one_step)

    def full_size_fills(prof) -> list:
        return [e for e in prof.events() if e.name in ("aten::zero_", "aten::fill_") and e.input_shapes
                and e.input_shapes[0] == [160, 63]]  # a zeroed (4*hidden, inputs) buffer of layer 1

    assert not full_size_fills(prof), "the weight gradient of a gate slice was zero-filled at full size"
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        gradients(sliced)
    assert full_size_fills(prof)  # the check sees the fills of autograd's slice backward


@pytest.mark.parametrize("arch", ["study", "study_2plus1", "sequence", "waveform"])
def test_bfloat16_autocast_stays_close_to_float32(arch: str) -> None:
    features = FeatureConfig(representation="waveform", frames=4, waveform_frame=32) if arch == "waveform" else FeatureConfig()
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, hidden_size=32, num_layers=2, dropout=0.0, extra_hidden=8), features)
    x = torch.randn(6, features.num_frames, features.feature_dim)
    exact = model(x)
    with autocast("cpu", "bfloat16"):
        mixed = model(x)
    assert mixed.float().sub(exact).abs().max() < 0.05 * exact.abs().max()  # bfloat16 keeps ~3 digits
    assert not torch.equal(mixed.float(), exact)  # the products really ran in bfloat16
    mixed.float().sum().backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all())
               for p in model.parameters())
    with autocast("cpu", "float32"):
        torch.testing.assert_close(model(x), exact, rtol=0, atol=0)


def test_sequence_model_depends_on_frame_order() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="sequence", hidden_size=8, pooling="last"), FeatureConfig(frames=5)).eval()
    x = torch.randn(2, 5, 21)
    assert not torch.allclose(model(x), model(x.flip(1)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_metrics_match_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 200):
        y = rng.integers(0, 6, n)  # classes 6 and 7 absent from y_true
        probs = rng.dirichlet(np.ones(8), n)
        pred = probs.argmax(1)
        m = evaluate(y, probs)
        assert m["n"] == n
        assert m["accuracy"] == pytest.approx(np.mean(pred == y))
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
        assert m["confusion"] == confusion_matrix(y, pred, labels=range(8)).tolist()
        recall = recall_score(y, pred, labels=range(8), average=None, zero_division=0)
        for c in range(8):
            expected = None if c not in y else pytest.approx(recall[c])
            assert m["per_class_accuracy"][c] == expected


def test_metrics_of_perfect_and_empty_predictions() -> None:
    y = np.array([0, 1, 2, 2])
    m = evaluate(y, np.eye(8)[y])
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == 1.0
    assert m["per_class_accuracy"][:3] == [1.0, 1.0, 1.0] and m["per_class_accuracy"][3] is None
    empty = evaluate(np.zeros(0, dtype=int), np.zeros((0, 8)))
    assert empty["n"] == 0 and empty["accuracy"] is None and np.sum(empty["confusion"]) == 0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sequence_lstm_trained_layer_by_layer_is_nn_lstm(bidirectional: bool) -> None:
    """With dropout between layers the model runs one layer at a time (so its masks can come
    from a generator); with p = 0 masks that path must be exactly nn.LSTM's function."""
    torch.manual_seed(0)
    layered = build_model(ModelConfig(arch="sequence", hidden_size=8, num_layers=3, dropout=0.3,
                                      bidirectional=bidirectional, pooling="mean"), FeatureConfig())
    fused = build_model(ModelConfig(arch="sequence", hidden_size=8, num_layers=3, dropout=0.0,
                                    bidirectional=bidirectional, pooling="mean"), FeatureConfig())
    fused.load_state_dict(layered.state_dict())
    layered.train(), fused.train()
    layered.between.p = layered.drop.p = 0.0  # masks of ones; lstm.dropout stays 0.3: layer-by-layer path
    x = torch.randn(5, 3, 21)
    torch.testing.assert_close(layered(x), fused(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["study", "sequence"])
def test_dropout_masks_come_from_the_run_generator(arch: str) -> None:
    model = build_model(ModelConfig(arch=arch, hidden_size=16, num_layers=2, dropout=0.5), FeatureConfig())
    model.train()
    x = torch.randn(6, 3, 21)
    outs = []
    for _ in range(2):
        set_dropout_generator(model, torch.Generator().manual_seed(7))
        torch.manual_seed(len(outs))  # the global generator must not matter
        outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    set_dropout_generator(model, torch.Generator().manual_seed(8))
    assert not torch.equal(model(x), outs[0])


def test_lstm_dtype_is_the_dtype_that_runs() -> None:
    """The decision: CPU autocast runs nn.LSTM in bfloat16; on CUDA autocast would make it float16,
    so there the LSTM leaves autocast and runs float32. Checked against what really runs on CPU."""
    assert lstm_dtype("cpu", "bfloat16") == torch.bfloat16
    assert lstm_dtype("cuda", "bfloat16") == torch.float32
    assert lstm_dtype("cpu", "float32") == lstm_dtype("cuda", "float32") == torch.float32
    model = build_model(ModelConfig(arch="sequence", hidden_size=8, num_layers=2), FeatureConfig())
    x = torch.randn(2, 3, 21)
    for training in (True, False):  # layer by layer (dropout between layers) and the fused nn.LSTM call
        model.train(training)
        with autocast("cpu", "bfloat16"):
            assert not lstm_outside_autocast("cpu")
            out, h = model._layers(x)
        assert out.dtype == h.dtype == lstm_dtype("cpu", "bfloat16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_lstm_runs_in_the_dtype_the_option_says() -> None:
    model = build_model(ModelConfig(arch="sequence", hidden_size=8, num_layers=2), FeatureConfig()).cuda()
    seen: list[torch.dtype] = []
    model.lstm.register_forward_hook(lambda module, inputs, output: seen.append(output[0].dtype))
    model.eval()
    with autocast("cuda", "bfloat16"):
        logits = model(torch.randn(2, 3, 21, device="cuda"))
    assert seen == [lstm_dtype("cuda", "bfloat16")] == [torch.float32]  # not cuDNN autocast's float16
    assert logits.dtype == torch.bfloat16  # the head still ran in bfloat16
    model.train()
    with autocast("cuda", "bfloat16"):
        assert lstm_outside_autocast("cuda")
        out, _ = model._layers(torch.randn(2, 3, 21, device="cuda"))
    assert out.dtype == torch.float32
