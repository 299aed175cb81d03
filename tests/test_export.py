"""Export: CSV of tables and per-epoch history (long format, tags as text, formulas guarded)
and a run's model bundle that loads back into a Predictor without running code."""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402

from engine.runs import export  # noqa: E402
from engine.core.errors import StoreError  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402
from engine.learn.train import train_run  # noqa: E402


def read(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")


def test_history_is_long_format_with_plain_tags(store: RunStore) -> None:
    a = store.create_run(tiny_config(epochs=5), name="=HYPERLINK(1)", tags=("ablation", "study"))
    b = store.create_run(tiny_config(epochs=2, **{"train.seed": 3}), name="b")
    for epoch in (1, 2):
        store.append_epoch(a, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": float("nan"),
                               "val_accuracy": 0.1 * epoch, "seconds": 2.0 * epoch}, [1.0])
    store.append_epoch(b, {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.7,
                           "val_shift_accuracy": 0.4, "seconds": 1.0}, [1.0])
    rows = read(export.history_csv([store.get(a), store.get(b)]))
    assert list(rows[0]) == list(export.HISTORY_COLUMNS)
    assert len(rows) == 2 * 4 + 5  # run a: 2 epochs x 4 metrics; run b: 1 epoch x 5
    first = rows[0]
    assert first["tags"] == "ablation,study"  # plain text, not "['ablation', 'study']"
    assert first["name"] == "'=HYPERLINK(1)"  # a formula is never run by a spreadsheet
    assert (first["epoch"], first["metric"], float(first["value"])) == ("1", "train_loss", 1.0)
    assert (first["epochs_planned"], first["status"]) == ("5", "queued")  # 2 of 5 epochs: partial, visibly
    nan = next(r for r in rows if r["run_id"] == a and r["metric"] == "val_loss")
    assert nan["value"] == ""  # non-finite: empty, not "nan"
    shift = [r for r in rows if r["run_id"] == b and r["metric"] == "val_shift_accuracy"]
    assert [(r["seed"], r["tags"], float(r["value"])) for r in shift] == [("3", "", 0.4)]


def test_a_table_writes_lists_as_text_and_missing_numbers_empty() -> None:
    import pandas as pd

    rows = [{"id": "r1", "tags": ["x", "y"], "acc": np.float64(0.5), "gap": float("nan"), "note": pd.NaT},
            {"id": "r2", "tags": [], "acc": 0.25, "gap": 0.1, "note": "+1"}]
    out = read(export.table_csv(rows, ["id", "tags", "acc", "gap", "note"]))
    assert out == [{"id": "r1", "tags": "x,y", "acc": "0.5", "gap": "", "note": ""},
                   {"id": "r2", "tags": "", "acc": "0.25", "gap": "0.1", "note": "'+1"}]


@pytest.fixture
def finished(store: RunStore) -> str:
    config = tiny_config(epochs=2, **{"train.standardize": True})
    result = train_run(config, synthetic_data(config), device="cpu")
    run_id = store.create_run(config, name="to download", status="running")
    store.save_result(run_id, result)
    return run_id


def test_the_model_bundle_loads_back_and_predicts_as_the_stored_run(store: RunStore, finished: str,
                                                                      tmp_path: Path) -> None:
    store.rename(finished, "renamed")
    bundle = export.model_bundle(store, finished)
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "config.json", "model.json", "model.pt", "ood_reference.pt"]
        info = json.loads(zf.read("model.json"))
        state = torch.load(io.BytesIO(zf.read("model.pt")), weights_only=True)  # no code runs
    assert info["name"] == "renamed" and info["run_id"] == finished and info["standardizer"] is not None
    assert set(state) == set(store.load_state_dict(finished))
    path = tmp_path / export.bundle_name(finished)
    path.write_bytes(bundle)
    loaded, stored = export.load_bundle(path), Predictor.from_store(store, finished)
    x = synthetic_data(stored.config)["test"].x
    np.testing.assert_array_equal(loaded.predict_features(x), stored.predict_features(x))
    assert loaded.class_names == stored.class_names and loaded.config == stored.config


def test_a_bad_bundle_says_what_is_wrong(store: RunStore, finished: str) -> None:
    with pytest.raises(StoreError, match="not a zip"):
        export.load_bundle(b"garbage")
    bundle = export.model_bundle(store, finished)
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if name != "model.pt":
                dst.writestr(name, src.read(name))
    with pytest.raises(StoreError, match="model.pt"):
        export.load_bundle(broken.getvalue())
    queued = store.create_run(tiny_config(), name="never trained")
    with pytest.raises(StoreError, match="no saved model"):
        export.model_bundle(store, queued)


def replace_member(bundle: bytes, name: str, data: bytes) -> bytes:
    """The bundle with one member's bytes replaced (deflated, as model_bundle writes it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.namelist():
            dst.writestr(member, data if member == name else src.read(member))
    return out.getvalue()


class Payload:
    """A pickle that would run code on load (os.system) if torch read it without weights_only."""
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage", ["crafted pickle", "truncated weights", "bad JSON", "JSON not an object",
                                    "bad config", "truncated zip"])
def test_a_damaged_or_crafted_bundle_is_a_store_error_naming_the_cause(store: RunStore, finished: str,
                                                                        damage: str) -> None:
    bundle = export.model_bundle(store, finished)
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        weights = zf.read("model.pt")
    crafted = io.BytesIO()
    torch.save({"w": Payload()}, crafted)
    cases = {
        "crafted pickle": (lambda: replace_member(bundle, "model.pt", crafted.getvalue()), "unsafe|plain tensors"),
        "truncated weights": (lambda: replace_member(bundle, "model.pt", weights[: len(weights) // 2]), "damaged"),
        "bad JSON": (lambda: replace_member(bundle, "model.json", b"{not json"), "JSON"),
        "JSON not an object": (lambda: replace_member(bundle, "model.json", b"[1, 2]"), "not an object"),
        "bad config": (lambda: replace_member(bundle, "config.json", b'{"model": {"arch": "gru"}}'), "damaged"),
        "truncated zip": (lambda: bundle[: len(bundle) - 200], "zip"),
    }
    make, cause = cases[damage]
    with pytest.raises(StoreError, match=cause):
        export.load_bundle(make())


def test_a_zip_bomb_is_refused_before_it_is_inflated(store: RunStore, finished: str, monkeypatch) -> None:
    """A member larger, uncompressed, than its limit is refused from the archive's directory;
    a directory that lies about the size is caught one byte past the limit while reading."""
    bundle = export.model_bundle(store, finished)
    bomb = replace_member(bundle, "model.json", b" " * (export.BUNDLE_MEMBER_LIMITS["model.json"] + 1))
    assert len(bomb) < len(bundle) + 100_000  # it is small on disk
    with pytest.raises(StoreError, match="limit"):
        export.load_bundle(bomb)
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        weights = zf.read("model.pt")
    config = export.RunConfig.from_dict(json.loads(zipfile.ZipFile(io.BytesIO(bundle)).read("config.json")))
    limit = export.weights_limit(config, 8)
    assert len(weights) < limit < 2 * len(weights) + (2 << 20)  # the weights' own size, with room
    padded = replace_member(bundle, "model.pt", weights + b"\0" * limit)
    with pytest.raises(StoreError, match="model.pt would be .* over the"):
        export.load_bundle(padded)
    read = []
    original = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: read.append(n) or original(self, n))
    monkeypatch.setattr(zipfile.ZipInfo, "file_size", property(lambda self: 10, lambda self, v: None))  # a lying directory
    with pytest.raises(StoreError, match="damaged"):  # zipfile stops at the declared size: a CRC mismatch
        export.load_bundle(bomb)
    assert read and all(0 < n <= export.BUNDLE_MEMBER_LIMITS["model.json"] + 1 for n in read)


# ---- class names (issue #27): a bundle carries them; loading never maps labels silently ----------


def with_model_json(bundle: bytes, **changes) -> bytes:
    """The bundle with model.json's keys changed (a value None: the key removed, as in bundles made
    before the key existed)."""
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        info = json.loads(zf.read("model.json"))
    info = {k: v for k, v in {**info, **changes}.items() if v is not None}
    return replace_member(bundle, "model.json", json.dumps(info).encode())


def test_a_bundle_carries_its_class_names_and_refuses_other_classes(store: RunStore, finished: str) -> None:
    from engine.core.labels import CLASS_NAMES

    bundle = export.model_bundle(store, finished)
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        assert json.loads(zf.read("model.json"))["class_names"] == list(CLASS_NAMES)
    assert export.load_bundle(bundle, class_names=CLASS_NAMES).class_names == list(CLASS_NAMES)
    other = [*CLASS_NAMES[:7], "cello"]
    with pytest.raises(StoreError, match=r"other classes than expected \(it lacks \['cello'\]; it has \['violin'\]\)"):
        export.load_bundle(bundle, class_names=other)
    with pytest.raises(StoreError, match="another order"):
        export.load_bundle(bundle, class_names=list(reversed(CLASS_NAMES)))


def test_a_bundle_of_other_classes_loads_with_its_own_names(store: RunStore, finished: str) -> None:
    """A three-class run (its meta.json names them, its head has three outputs), as a custom
    dataset's run will be stored: the bundle carries the names, the Predictor answers in them."""
    folder = store.runs_dir / finished
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "class_names": ["bird", "cat", "dog"]}))
    state = store.load_state_dict(finished)
    torch.save({**state, "head.weight": state["head.weight"][:3], "head.bias": state["head.bias"][:3]},
               folder / "model.pt")
    bundle = export.model_bundle(store, finished)
    predictor = export.load_bundle(bundle, class_names=["bird", "cat", "dog"])
    x = synthetic_data(predictor.config)["test"].x
    assert predictor.class_names == ["bird", "cat", "dog"] and predictor.predict_features(x).shape == (len(x), 3)
    with pytest.raises(StoreError, match="other classes"):
        export.load_bundle(bundle, class_names=export.labels.CLASS_NAMES)


@pytest.mark.parametrize("names,cause", [
    (["clarinet", "guitar", "singer"], "3 class names but its weights give 8 outputs"),
    (["a", "b", "c", "d", "e", "f", "g", "a"], r"class names repeat \['a'\]"),
    ("clarinet,guitar", "not a list of non-empty texts"),
    (["a", "b", "c", "d", "e", "f", "g", " "], "not a list of non-empty texts"),
])
def test_a_class_list_that_does_not_fit_is_refused(store: RunStore, finished: str, names, cause: str) -> None:
    with pytest.raises(StoreError, match=cause):
        export.load_bundle(with_model_json(export.model_bundle(store, finished), class_names=names))


def test_an_old_bundle_without_class_names_still_loads(store: RunStore, finished: str) -> None:
    from engine.core.labels import CLASS_NAMES

    old = with_model_json(export.model_bundle(store, finished), class_names=None)
    with zipfile.ZipFile(io.BytesIO(old)) as zf:
        assert "class_names" not in json.loads(zf.read("model.json"))
    assert export.load_bundle(old, class_names=CLASS_NAMES).class_names == list(CLASS_NAMES)
    assert export.class_names_of({}) == export.class_names_of({"class_names": None}) == list(CLASS_NAMES)
