"""The command-line contract that scripts rely on: `python -m engine ... --json`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "8", "--epochs", "2", "--batch-size", "16"]


def engine(*args: str, cache: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def data(make_tiny_dataset) -> Path:
    root = make_tiny_dataset(per_class=2)
    broken = root / "audio" / "Medley-solos-DB_training-0_00000000-0000-4000-8000-000000000000.wav"
    broken.write_bytes(b"not audio at all")
    with (root / "annotation" / "Medley-solos-DB_metadata.csv").open("a") as csv:
        csv.write("training,clarinet,0,99,00000000-0000-4000-8000-000000000000\n")
    return root


def test_data_summary_json_counts_and_reports_problems(data, tmp_path):
    done = engine("data", "summary", "--data", str(data), "--json", cache=tmp_path / "cache")
    summary = json.loads(done.stdout)
    assert summary["counts"]["training"]["clarinet"] == 2  # the broken clip is not counted...
    assert summary["counts"]["test"]["violin"] == 2
    [problem] = summary["problems"]  # ...but reported
    assert problem["file"].endswith("000000000000.wav") and problem["reason"]


def test_data_summary_fails_clearly_without_a_dataset(tmp_path):
    done = engine("data", "summary", "--data", str(tmp_path / "nowhere"), "--json", cache=tmp_path / "c", check=False)
    assert done.returncode != 0 and done.stdout == ""
    assert "nowhere" in done.stderr and "Traceback" not in done.stderr


def test_train_predict_runs_resume_round_trip(data, tmp_path):
    cache = tmp_path / "cache"
    trained = json.loads(engine("train", "--data", str(data), *TINY, "--name", "tiny", "--json", cache=cache).stdout)
    assert {"run_id", "status", "val_accuracy", "test_accuracy", "test_balanced_accuracy"} <= set(trained)
    assert trained["status"] == "finished" and 0.0 <= trained["test_accuracy"] <= 1.0

    runs = json.loads(engine("runs", "--json", cache=cache).stdout)
    assert [r["run_id"] for r in runs] == [trained["run_id"]]

    good = next((data / "audio").glob("*test-3_*.wav"))
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....garbage")
    done = engine("predict", "--run", trained["run_id"], str(good), str(garbage), "--json", cache=cache, check=False)
    assert done.returncode == 1  # one file failed, the other was still predicted
    first, second = json.loads(done.stdout)
    assert first["file"] == str(good) and first["label"] in first["probabilities"]
    assert abs(sum(first["probabilities"].values()) - 1.0) < 1e-4
    assert second["file"] == str(garbage) and "not a readable audio file" in second["error"]

    again = json.loads(engine("restart", trained["run_id"], "--json", cache=cache).stdout)
    assert again["status"] == "finished" and again["run_id"] != trained["run_id"]
    assert again["test_accuracy"] == trained["test_accuracy"]  # same seed, same configuration, same numbers


def test_bad_flag_values_are_refused_with_the_name(data, tmp_path):
    done = engine("train", "--data", str(data), "--dropout", "1.5", "--json", cache=tmp_path / "c", check=False)
    assert done.returncode == 2 and "dropout" in done.stderr and "Traceback" not in done.stderr


def test_train_seeds_trains_one_group_of_ordinary_runs(data, tmp_path):
    cache = tmp_path / "cache"
    runs = json.loads(engine("train", "--data", str(data), *TINY, "--name", "rep", "--seeds", "0,1,2", "--json",
                             cache=cache).stdout)
    assert [r["name"] for r in runs] == ["rep seed 0", "rep seed 1", "rep seed 2"]
    assert all(r["status"] == "finished" for r in runs)
    metas = [json.loads((cache / "runs" / r["run_id"] / "meta.json").read_text()) for r in runs]
    assert [m["config"]["train"]["seed"] for m in metas] == [0, 1, 2]
    assert [m["trained_in_group"]["member"] for m in metas] == [0, 1, 2]
    alone = json.loads(engine("train", "--data", str(data), *TINY, "--seed", "1", "--json", cache=cache).stdout)
    assert alone["test_accuracy"] == runs[1]["test_accuracy"]  # grouped or alone: the same run
    bad = engine("train", "--data", str(data), *TINY, "--seeds", "0,x", cache=cache, check=False)
    assert bad.returncode == 2 and "--seeds" in bad.stderr and "Traceback" not in bad.stderr
