"""Hardening of data and cache (issue 13, cases 8-10): NaN clips are found and skipped; the
feature cache is verified and never crashes a run; an unwritable cache says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def _engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _poison(root: Path, subset: str = "training", value: float = np.nan) -> str:
    """Put one non-finite sample into the first clip of `subset`; returns its file name."""
    path = sorted((root / "audio").glob(f"Medley-solos-DB_{subset}-*.wav"))[0]
    y, sr = sf.read(path, dtype="float32")
    y[1000] = value
    sf.write(path, y, sr, subtype="FLOAT")
    return path.name


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_clip_is_a_problem_and_skipped(make_tiny_dataset, medley_cache, value):
    from engine.data.dataset import load_dataset

    root = make_tiny_dataset(per_class=2)
    name = _poison(root, value=value)
    ds = load_dataset(root)
    assert [p.file for p in ds.problems] == [name] and "NaN or infinite" in ds.problems[0].reason
    assert name not in {c.path.name for c in ds.clips} and len(ds.clips) == 47
    again = load_dataset(root)  # from the memo: same answer, no second full read
    assert [p.file for p in again.problems] == [name] and again.fingerprint() == ds.fingerprint()


def test_training_runs_past_a_nan_clip_and_summary_lists_it(make_tiny_dataset, tmp_path):
    root = make_tiny_dataset(per_class=2)
    name = _poison(root)
    cache = tmp_path / "cache"
    done = _engine("data", "summary", "--data", str(root), "--json", cache=cache)
    assert done.returncode == 0, done.stderr
    assert {p["file"] for p in json.loads(done.stdout)["problems"]} == {name}
    done = _engine("train", "--data", str(root), "--hidden", "8", "--epochs", "1", "--batch-size", "8", "--json",
                   cache=cache)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished"


# ---- 9. feature cache integrity ----------------------------------------------------------------


def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*-training.npy"))


def test_garbled_cache_bytes_are_detected_and_recomputed(make_tiny_dataset, medley_cache):
    from engine.core.config import FeatureConfig
    from engine.data.dataset import load_dataset
    from engine.features.extract import load_features

    ds = load_dataset(make_tiny_dataset(per_class=2))
    config = FeatureConfig(frames=None)
    fresh = load_features(ds, config)["training"].x
    [path] = _cache_files(medley_cache)
    data = bytearray(path.read_bytes())
    data[-4000:-2000] = np.full(500, 1e38, dtype=np.float32).tobytes()  # behind a valid .npy header
    path.write_bytes(bytes(data))
    again = load_features(ds, config)["training"].x
    np.testing.assert_array_equal(again, fresh)
    assert np.isfinite(again).all() and np.abs(again).max() < 1e30
    assert np.load(path).tobytes() == fresh.tobytes()  # the entry was rewritten


def test_cache_entries_are_not_memory_mapped_and_never_read_only(make_tiny_dataset, medley_cache):
    from engine.core.config import FeatureConfig
    from engine.data.dataset import load_dataset
    from engine.features.extract import load_features

    ds = load_dataset(make_tiny_dataset(per_class=2))
    load_features(ds, FeatureConfig(frames=None))
    x = load_features(ds, FeatureConfig(frames=None))["training"].x  # from the cache, whole clip
    assert not isinstance(x, np.memmap) and not isinstance(x.base, np.memmap) and x.flags.writeable


CHILD = r"""
import os, sys
from pathlib import Path
import numpy as np
from engine.core.config import FeatureConfig, RunConfig
from engine.data.dataset import load_dataset
from engine.features.extract import load_features
from engine.learn.train import train_run

ds = load_dataset(sys.argv[1])
config = RunConfig(features=FeatureConfig(frames=None)).with_values(
    **{"model.arch": "sequence", "model.hidden_size": 8, "train.epochs": 1, "train.batch_size": 8})
load_features(ds, config.features)                 # fill the cache
data = load_features(ds, config.features)          # a run's data, from the cache
for path in (Path(os.environ["MEDLEY_CACHE"]) / "features").glob("*.npy"):
    os.truncate(path, 128)                         # the cache file shrinks under the run
print(float(sum(fs.x.sum() for fs in data.values())))
result = train_run(config, data, device="cpu")
print(result.status)
"""


def test_truncating_a_cache_file_under_a_run_does_not_kill_it(make_tiny_dataset, medley_cache):
    root = make_tiny_dataset(per_class=2)
    env = {**os.environ, "MEDLEY_CACHE": str(medley_cache)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -7 would be SIGBUS
    assert done.stdout.split()[-1] == "finished"
    assert "not writable" not in done.stderr  # no read-only array reached torch


# ---- 10. a cache folder that cannot be written -------------------------------------------------


def test_unwritable_feature_cache_fails_the_run_with_a_message_naming_the_folder(make_tiny_dataset, tmp_path,
                                                                                 monkeypatch):
    """A file where the features folder should be (works as root too, unlike chmod)."""
    from engine.runs.jobs import JobManager
    from engine.core.config import RunConfig
    from engine.runs.store import RunStore

    root = make_tiny_dataset(per_class=2)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "features").write_text("not a folder")
    monkeypatch.setenv("MEDLEY_CACHE", str(cache))
    manager = JobManager(RunStore(cache / "runs.sqlite", cache / "runs"))
    run_id = manager.submit(RunConfig(data=str(root)).with_values(**{"model.hidden_size": 8, "train.epochs": 1}))
    assert manager.wait([run_id], timeout=300)
    record = manager.store.get(run_id)
    manager.shutdown()
    assert record.status == "failed"
    assert str(cache / "features") in record.error and "MEDLEY_CACHE" in record.error
    assert "Traceback" not in record.error and "Error:" not in record.error.split("(")[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_feature_folder_names_it(make_tiny_dataset, medley_cache):
    from engine.core.config import FeatureConfig
    from engine.data.dataset import load_dataset
    from engine.core.errors import CacheError
    from engine.features.extract import load_features

    ds = load_dataset(make_tiny_dataset(per_class=2))
    folder = medley_cache / "features"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CacheError, match="features"):
            load_features(ds, FeatureConfig())
    finally:
        folder.chmod(0o755)


def test_cli_with_a_cache_under_a_file_says_so(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = _engine("runs", cache=blocker / "cache")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "cannot write to the cache folder" in done.stderr and "--cache" in done.stderr
