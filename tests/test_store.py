"""RunStore: round trip, concurrency, files loadable with weights_only, interruption."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.core.config import RunConfig
from engine.core.errors import StoreError
from engine.runs.store import RunStore, group_key, process_alive


def tiny_config(**values) -> RunConfig:
    return RunConfig().with_values(**{"model.hidden_size": 8, "train.epochs": 2, **values})


def fake_result(status: str = "finished") -> SimpleNamespace:
    probs = np.full((2, 8), 1 / 8, dtype=np.float32)
    return SimpleNamespace(
        status=status,
        history=[{"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_accuracy": 0.2, "seconds": 0.1},
                 {"epoch": 2, "train_loss": 1.5, "val_loss": 1.9, "val_accuracy": np.float32(0.3), "seconds": 0.2}],
        step_losses=[2.2, 2.0, 1.6, 1.5],
        metrics={"validation": {"n": 2, "accuracy": 0.5}, "test": {"n": 2, "accuracy": 0.0}},
        predictions={"validation": {"ids": ["a", "b"], "y": np.array([0, 1]), "probs": probs}},
        best_epoch=2,
        state_dict={"w": torch.ones(2, 3), "b": torch.zeros(3)},
        standardizer={"mean": np.zeros(3, dtype=np.float32), "std": np.ones(3)},
        device="cpu",
        error=None,
    )


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")


def test_round_trip_survives_reopen(tmp_path: Path, store: RunStore) -> None:
    config = tiny_config()
    run_id = store.create_run(config, name="first", tags=["a", "b", "a"], notes="hi")
    assert run_id.startswith("r-") and store.get(run_id).status == "queued"
    store.set_status(run_id, "running", device="cpu")
    store.append_epoch(run_id, {"epoch": 1, "train_loss": 2.0}, [2.2, 2.0])
    store.append_epoch(run_id, {"epoch": 2, "train_loss": 1.5}, [1.6, 1.5])
    store.save_checkpoint(run_id, {"epoch": 2, "model": {"w": torch.ones(2)}, "history": [{"x": np.float64(1)}],
                                   "best": {"acc": np.float32(0.5), "arr": np.zeros(2)}, "betas": (0.9, 0.99)})
    store.save_result(run_id, fake_result())
    store.close()

    reopened = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    record = reopened.get(run_id)
    assert record.config == config and record.status == "finished"
    assert record.tags == ["a", "b"] and record.notes == "hi" and record.name == "first"
    assert record.metrics["validation"]["accuracy"] == 0.5
    assert [h["epoch"] for h in record.history] == [1, 2] and record.best_epoch == 2
    assert record.started is not None and record.finished >= record.started and record.device == "cpu"
    assert reopened.step_losses(run_id) == [2.2, 2.0, 1.6, 1.5]
    assert reopened.load_predictions(run_id)["validation"]["y"] == [0, 1]
    assert reopened.load_meta(run_id)["standardizer"]["std"] == [1.0, 1.0, 1.0]
    assert torch.equal(reopened.load_state_dict(run_id)["w"], torch.ones(2, 3))
    checkpoint = reopened.load_checkpoint(run_id)
    assert checkpoint["epoch"] == 2 and torch.equal(checkpoint["best"]["arr"], torch.zeros(2, dtype=torch.float64))

    reopened.rename(run_id, "renamed")
    reopened.set_tags(run_id, ["x"])
    reopened.set_notes(run_id, "new")
    assert [r.name for r in reopened.list_runs(tag="x")] == ["renamed"]
    assert reopened.list_runs(tag="a") == [] and reopened.get(run_id).notes == "new"
    reopened.delete(run_id)
    assert not (tmp_path / "runs" / run_id).exists()
    with pytest.raises(StoreError, match=f"no run '{run_id}'"):
        reopened.get(run_id)


def test_unknown_id_and_status(store: RunStore) -> None:
    with pytest.raises(StoreError, match="no run 'xyz' in the store"):
        store.get("xyz")
    with pytest.raises(StoreError, match="no run 'xyz'"):
        store.set_status("xyz", "failed")
    with pytest.raises(StoreError, match="unknown run status"):
        store.create_run(tiny_config(), status="weird")


def test_resumed_epoch_replaces_not_duplicates(store: RunStore) -> None:
    run_id = store.create_run(tiny_config())
    for epoch, losses in ((1, [3.0]), (2, [2.0]), (2, [1.9])):
        store.append_epoch(run_id, {"epoch": epoch}, losses)
    assert [h["epoch"] for h in store.get(run_id).history] == [1, 2]
    assert store.step_losses(run_id) == [3.0, 1.9]


def test_list_filters_order_and_group_key(store: RunStore) -> None:
    ids = [store.create_run(tiny_config(**{"train.seed": s}), tags=["seeds"] if s else []) for s in range(4)]
    store.set_status(ids[1], "failed", error="boom")
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(status="failed")] == [ids[1]]
    assert len(store.list_runs(status=["queued", "failed"], limit=2)) == 2
    assert len(store.list_runs(tag="seeds")) == 3
    keys = {r.group_key for r in store.list_runs()}
    digests = {r.config_digest for r in store.list_runs()}
    assert len(keys) == 1 and len(digests) == 4
    assert group_key(tiny_config(**{"train.lr": 1e-3})) not in keys
    assert store.get(ids[1]).error == "boom"


def test_concurrent_writers_from_threads(store: RunStore) -> None:
    barrier = threading.Barrier(6)
    made: list[str] = []

    def work() -> None:
        barrier.wait()
        for _ in range(5):
            run_id = store.create_run(tiny_config())
            store.append_epoch(run_id, {"epoch": 1}, [1.0])
            made.append(run_id)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 30
    assert all(len(r.history) == 1 for r in store.list_runs())


def test_mark_interrupted_only_dead_owners(store: RunStore) -> None:
    running = store.create_run(tiny_config())
    store.set_status(running, "running")
    queued = store.create_run(tiny_config())
    done = store.create_run(tiny_config(), status="finished")
    assert store.mark_interrupted() == []  # this process is alive
    assert sorted(store.mark_interrupted(alive=lambda pid, start: False)) == sorted([running, queued])
    assert store.get(running).status == "interrupted" and store.get(done).status == "finished"
    assert process_alive(2**23) is False


def test_lists_many_runs(store: RunStore) -> None:
    """220 runs list in full (the time of listing is measured by benchmarks/pages.py)."""
    for _ in range(220):
        store.create_run(tiny_config())
    assert len(store.list_runs()) == 220


def test_a_run_trained_in_a_group_says_so(store: RunStore) -> None:
    alone, grouped = (store.create_run(tiny_config()) for _ in range(2))
    store.save_result(alone, fake_result())
    result = fake_result()
    result.group = {"size": 3, "seeds": [0, 1, 2], "member": 1}
    store.save_result(grouped, result)
    assert "trained_in_group" not in store.load_meta(alone)
    assert store.load_meta(grouped)["trained_in_group"] == {"size": 3, "seeds": [0, 1, 2], "member": 1}
