"""The training loop on tiny synthetic features: learning, determinism, divergence,
cancellation, selection, standardisation and resume."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import engine.learn.train as train_module
from engine.core.config import ModelConfig, RunConfig, TrainConfig
from engine.core.errors import ConfigError
from engine.learn.train import TrainHooks, class_weights, fit_standardizer, train_run
from engine.learn.trust import TRUST_KEYS


@dataclass
class FeatureSet:  # stand-in with the fields of engine.features.extract.FeatureSet
    x: np.ndarray
    y: np.ndarray
    ids: list[str]


def make_split(n: int, seed: int, offset: float = 0.0) -> FeatureSet:
    """n clips of (3 frames, 21 features): class-dependent means on a few features + noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 8
    x = rng.normal(0, 1, (n, 3, 21)).astype(np.float32)
    x[np.arange(n), :, y] += 3.0  # feature c is high for class c
    return FeatureSet((x * 5 + offset).astype(np.float32), y.astype(np.int64), [f"{seed}-{i}" for i in range(n)])


@pytest.fixture(scope="module")
def data() -> dict[str, FeatureSet]:
    return {"training": make_split(160, 0), "validation": make_split(48, 1), "test": make_split(40, 2)}


def config(**train) -> RunConfig:
    options = {"lr": 1e-2, "batch_size": 16, "epochs": 4, "seed": 0, **train}
    return RunConfig(model=ModelConfig(arch="study", hidden_size=16, num_layers=2, dropout=0.1),
                     train=TrainConfig(**options))


def test_learns_easy_data_well_above_chance(data) -> None:
    result = train_run(config(epochs=6, standardize=True), data, device="cpu")
    assert result.status == "finished" and result.error is None
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert len(result.step_losses) == 6 * 10
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.metrics["validation"]["accuracy"] > 0.8  # chance is 0.125
    assert result.metrics["test"]["accuracy"] > 0.8
    assert result.predictions["test"]["ids"] == data["test"].ids
    assert np.array(result.predictions["validation"]["probs"]).shape == (48, 8)
    assert all(t.device.type == "cpu" for t in result.state_dict.values())
    assert len(result.standardizer["mean"]) == 21 and result.device == "cpu"


def test_same_seed_same_numbers_other_seed_others(data) -> None:
    a, b = (train_run(config(epochs=2), data, device="cpu") for _ in range(2))
    c = train_run(config(epochs=2, seed=1), data, device="cpu")
    assert a.step_losses == b.step_losses and a.metrics == b.metrics
    assert a.predictions == b.predictions
    assert a.step_losses != c.step_losses


def test_runs_training_at_once_get_the_dropout_masks_they_get_alone(data) -> None:
    """Each run swaps in its own generator state for dropout, so threads do not mix masks."""
    import threading

    options = {"epochs": 3, "batch_size": 8}  # 60 steps, each drawing dropout masks
    alone = [train_run(config(seed=seed, **options), data, device="cpu").step_losses for seed in (0, 1)]
    together: dict[int, list[float]] = {}
    start = threading.Barrier(4)

    def train(slot: int, seed: int) -> None:
        start.wait()
        together[slot] = train_run(config(seed=seed, **options), data, device="cpu").step_losses

    threads = [threading.Thread(target=train, args=(slot, slot % 2)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[slot] for slot in range(4)] == [alone[0], alone[1], alone[0], alone[1]]


def test_every_optimizer_and_option_runs(data) -> None:
    for options in ({"optimizer": "sgd", "momentum": 0.9}, {"optimizer": "adadelta", "lr": 1.0},
                    {"weight_decay": 1e-4, "grad_clip": 1.0, "class_weighting": True}):
        result = train_run(config(epochs=1, **options), data, device="cpu")
        assert result.status == "finished" and len(result.history) == 1


def test_bfloat16_precision_learns_reproducibly_and_close_to_float32(data) -> None:
    exact = train_run(config(epochs=6, standardize=True), data, device="cpu")
    mixed, again = (train_run(config(epochs=6, standardize=True, precision="bfloat16"), data, device="cpu")
                    for _ in range(2))
    assert mixed.status == "finished" and mixed.step_losses == again.step_losses
    assert mixed.step_losses != exact.step_losses  # it is a different computation...
    assert mixed.metrics["validation"]["accuracy"] > 0.8  # ...that learns the same task
    assert abs(mixed.history[-1]["train_loss"] - exact.history[-1]["train_loss"]) < 0.05
    assert all(t.dtype == torch.float32 for t in mixed.state_dict.values())  # float32 master weights
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="float16")
    assert RunConfig.from_json(config(precision="bfloat16").to_json()).train.precision == "bfloat16"


def test_injected_nan_diverges_and_keeps_history(data, monkeypatch) -> None:
    """A model whose output turns NaN at its 25th training forward (epoch 3, step 5)."""
    build = train_module.build_model

    class TurnsNaN(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0
            self.head = inner.head  # as every engine model has (the OOD check reads the head's input)

        def forward(self, x):
            self.calls += self.training
            out = self.inner(x)
            return out * float("nan") if self.training and self.calls >= 25 else out

    monkeypatch.setattr(train_module, "build_model", lambda *a, **k: TurnsNaN(build(*a, **k)))
    result = train_run(config(epochs=5), data, device="cpu")
    assert result.status == "diverged"
    assert "epoch 3, step 5" in result.error
    assert len(result.history) == 2 and len(result.step_losses) == 24
    assert result.best_epoch == 2 and result.metrics["validation"]["n"] == 48  # last good epoch


def test_nan_features_diverge_at_the_first_step(data) -> None:
    bad = dict(data, training=FeatureSet(np.full_like(data["training"].x, np.nan), data["training"].y, data["training"].ids))
    result = train_run(config(), bad, device="cpu")
    assert result.status == "diverged" and "epoch 1, step 1" in result.error
    assert result.history == [] and result.metrics == {} and result.state_dict == {}


def test_should_stop_cancels_with_history_so_far(data) -> None:
    steps = []
    hooks = TrainHooks(on_step=lambda e, s, n, loss: steps.append((e, s, n, loss)), should_stop=lambda: len(steps) >= 15)
    result = train_run(config(), data, device="cpu", hooks=hooks)
    assert result.status == "cancelled"
    assert len(result.history) == 1 and len(result.step_losses) == 15
    assert steps[0][:3] == (1, 1, 10) and steps[-1][:3] == (2, 5, 10)
    assert result.metrics["validation"]["n"] == 48 and result.best_epoch == 1
    early = train_run(config(), data, device="cpu", hooks=TrainHooks(should_stop=lambda: True))
    assert early.status == "cancelled" and early.history == [] and early.metrics == {}


def test_best_selects_the_top_validation_epoch_last_the_final(data) -> None:
    kept: dict[int, dict] = {}
    hooks = TrainHooks(on_epoch=lambda record, ckpt: kept.update({record["epoch"]: ckpt["model"]}))
    # a high learning rate makes validation accuracy jump around (and with seed 2 peak before the end)
    best = train_run(config(select="best", lr=0.1, epochs=6, seed=2), data, device="cpu", hooks=hooks)
    accuracies = [r["val_accuracy"] for r in best.history]
    assert best.best_epoch == 1 + int(np.argmax(accuracies)) < 6  # the best epoch is not the last
    assert best.metrics["validation"]["accuracy"] == pytest.approx(max(accuracies))
    for key, value in best.state_dict.items():
        torch.testing.assert_close(value, kept[best.best_epoch][key])
    last = train_run(config(select="last", lr=0.1, epochs=6, seed=2), data, device="cpu")
    assert last.best_epoch == 6
    assert last.metrics["validation"]["accuracy"] == pytest.approx(accuracies[-1])


@pytest.mark.parametrize("select", ["best", "last"])
def test_resume_equals_an_uninterrupted_run(data, select) -> None:
    full = train_run(config(select=select), data, device="cpu")
    checkpoints: list[dict] = []
    hooks = TrainHooks(on_epoch=lambda record, ckpt: checkpoints.append(ckpt), should_stop=lambda: len(checkpoints) >= 2)
    part = train_run(config(select=select), data, device="cpu", hooks=hooks)
    assert part.status == "cancelled" and len(part.history) == 2
    buffer = io.BytesIO()
    torch.save(checkpoints[1], buffer)  # as the run store keeps it: checkpoint.pt
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert checkpoint["epoch"] == 2
    rest = train_run(config(select=select), data, device="cpu", resume=checkpoint)
    assert rest.status == "finished" and rest.best_epoch == full.best_epoch
    assert rest.step_losses == full.step_losses
    assert [r["val_loss"] for r in rest.history] == [r["val_loss"] for r in full.history]
    assert rest.metrics == full.metrics
    for key, value in full.state_dict.items():
        assert torch.equal(value, rest.state_dict[key])


def test_standardizer_uses_training_split_only(data) -> None:
    shifted = dict(data, validation=make_split(48, 1, offset=1000.0))
    result = train_run(config(epochs=1, standardize=True), shifted, device="cpu")
    mean, std = fit_standardizer(data["training"].x)
    x = data["training"].x.astype(np.float64)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(std, x.std(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(result.standardizer["mean"], mean, rtol=1e-6)
    assert fit_standardizer(np.ones((4, 3, 2), np.float32))[1].min() > 0  # floored


def test_class_weights_are_inverse_frequency() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), num_classes=3)
    np.testing.assert_allclose(weights, [4 / 6, 4 / 2, 0.0])


def test_empty_test_split_is_skipped(data) -> None:
    empty = FeatureSet(np.zeros((0, 3, 21), np.float32), np.zeros(0, np.int64), [])
    result = train_run(config(epochs=1), dict(data, test=empty), device="cpu")
    assert set(result.metrics) - set(TRUST_KEYS) == {"validation"}


def test_wrong_feature_shape_is_a_config_error(data) -> None:
    wrong = {"training": FeatureSet(np.zeros((8, 3, 20), np.float32), np.zeros(8, np.int64), ["a"] * 8)}
    with pytest.raises(ConfigError, match="expects"):
        train_run(config(), wrong, device="cpu")


def test_checkpoint_copies_only_when_due(data, monkeypatch) -> None:
    copies: list[int] = []
    real, depth = train_module._cpu, [0]

    def counting(obj):  # counts outermost calls only (_cpu recurses)
        copies.append(1) if depth[0] == 0 else None
        depth[0] += 1
        try:
            return real(obj)
        finally:
            depth[0] -= 1
    monkeypatch.setattr(train_module, "_cpu", counting)
    seen: list[dict] = []
    hooks = TrainHooks(on_epoch=lambda record, ckpt: seen.append(ckpt))
    hooks.checkpoint_due = lambda epoch: epoch == 3
    result = train_run(config(epochs=4), data, device="cpu", hooks=hooks)
    assert [("model" in c) for c in seen] == [False, False, True, False]
    assert [len(c["step_losses"]) for c in seen] == [10, 20, 30, 40]
    assert len(copies) == 3 + 1  # model, optimizer, best at epoch 3; the selected weights at the end
    assert result.status == "finished"


def test_runs_on_the_same_features_share_one_device_copy(data) -> None:
    fs = data["training"]
    scale = fit_standardizer(fs.x)
    with train_module.shared_split(fs, scale, "cpu") as (a, _), train_module.shared_split(fs, scale, "cpu") as (b, _):
        assert a.data_ptr() == b.data_ptr()
        with train_module.shared_split(fs, None, "cpu") as (c, _):
            assert c.data_ptr() != a.data_ptr()  # other scaling, other copy
    assert not train_module._SHARED  # freed with its last user


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@CUDA
def test_cuda_resume_continues_the_same_training_to_rounding(data) -> None:
    """On CUDA batch order and dropout masks are exact (the run's own generators), but cuBLAS
    may sum in another order from call to call (no use_deterministic_algorithms): so the
    check is to float tolerance there, where the CPU test above asks for identical numbers."""
    full = train_run(config(), data, device="cuda")
    checkpoints: list[dict] = []
    hooks = TrainHooks(on_epoch=lambda record, ckpt: checkpoints.append(ckpt), should_stop=lambda: len(checkpoints) >= 2)
    train_run(config(), data, device="cuda", hooks=hooks)
    resumed = train_run(config(), data, device="cuda", resume=checkpoints[1])
    np.testing.assert_allclose(resumed.step_losses, full.step_losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(resumed.predictions["test"]["probs"], full.predictions["test"]["probs"], atol=1e-4)


@CUDA
def test_cuda_concurrent_runs_get_their_own_masks_and_learn(data) -> None:
    import threading
    alone = train_run(config(epochs=3, standardize=True), data, device="cuda")
    results: list = [None, None]

    def run(slot: int) -> None:
        results[slot] = train_run(config(epochs=3, standardize=True), data, device="cuda")
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for result in results:
        np.testing.assert_allclose(result.step_losses, alone.step_losses, rtol=1e-4, atol=1e-5)
    assert alone.metrics["validation"]["accuracy"] > 0.5


@CUDA
@pytest.mark.parametrize("arch", ["study", "sequence"])
def test_cuda_bfloat16_trains_without_float16(data, arch: str) -> None:
    cfg = config(epochs=3, standardize=True, precision="bfloat16").with_values(**{"model.arch": arch})
    result = train_run(cfg, data, device="cuda")
    assert result.status == "finished" and all(np.isfinite(result.step_losses))
