"""The command-line contract that scripts rely on: `python -m engine ... --json`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "8", "--epochs", "2", "--batch-size", "16"]


def engine(*args: str, cache: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m engine ARGS` as a user runs it, with its own cache (and no $MEDLEY_DATA);
    asserts exit 0 unless `check` is False."""
    env = {k: v for k, v in os.environ.items() if k != "MEDLEY_DATA"} | {"MEDLEY_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
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
    assert [r["name"] for r in runs] == ["seed 0 of rep", "seed 1 of rep", "seed 2 of rep"]
    assert all(r["status"] == "finished" for r in runs)
    metas = [json.loads((cache / "runs" / r["run_id"] / "meta.json").read_text()) for r in runs]
    assert [m["config"]["train"]["seed"] for m in metas] == [0, 1, 2]
    assert [m["trained_in_group"]["member"] for m in metas] == [0, 1, 2]
    alone = json.loads(engine("train", "--data", str(data), *TINY, "--seed", "1", "--json", cache=cache).stdout)
    assert alone["test_accuracy"] == runs[1]["test_accuracy"]  # grouped or alone: the same run
    bad = engine("train", "--data", str(data), *TINY, "--seeds", "0,x", cache=cache, check=False)
    assert bad.returncode == 2 and "--seeds" in bad.stderr and "Traceback" not in bad.stderr


def test_compare_json_one_run_and_seed_groups(tmp_path, monkeypatch):
    from test_app_compare import add_run, make_splits

    from engine.compare import stats
    from engine.runs.store import RunStore

    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDLEY_CACHE", str(cache))
    store = RunStore()
    splits = make_splits(n=200)
    base = RunConfig(data="demo:tiny")
    better = base.with_values(**{"train.lr": 1e-3})
    a = [add_run(store, base.with_values(**{"train.seed": s}), f"a{s}", skill=0.3, seed=s, splits=splits)
         for s in range(3)]
    b = [add_run(store, better.with_values(**{"train.seed": s}), f"b{s}", skill=0.9, seed=10 + s, splits=splits)
         for s in range(3)]
    records = {r.id: r for r in store.list_runs()}
    store.close()

    one = json.loads(engine("compare", a[0], b[0], "--json", cache=cache).stdout)
    assert {"method", "split", "difference", "ci", "p_value", "runs_a", "runs_b"} <= set(one)
    assert one["split"] == "validation" and one["method"].startswith("McNemar")
    assert (one["runs_a"], one["runs_b"]) == ([a[0]], [b[0]])
    val = lambda i: records[i].metrics["validation"]["accuracy"]  # noqa: E731
    assert one["difference"] == pytest.approx(val(b[0]) - val(a[0]))
    assert one["ci"][0] <= one["difference"] <= one["ci"][1]

    group = json.loads(engine("compare", ",".join(a), ",".join(b[:2]), "--split", "test", "--json",
                              cache=cache).stdout)
    test_acc = lambda ids: np.mean([records[i].metrics["test"]["accuracy"] for i in ids])  # noqa: E731
    assert group["split"] == "test" and group["scope"] == "configurations"
    assert (group["n_runs_a"], group["n_runs_b"]) == (3, 2)
    assert group["difference"] == pytest.approx(test_acc(b[:2]) - test_acc(a))
    store = RunStore()  # the page's function gives the same numbers
    same = stats.compare_run_groups([store.get(i) for i in a], [store.get(i) for i in b[:2]],
                                    lambda r: store.load_predictions(r.id), split="test")
    store.close()
    assert same == group

    seeds = json.loads(engine("compare", a[0], f"{a[1]},{a[2]}", "--json", cache=cache).stdout)
    assert seeds["same_configuration"] and not seeds["significant"]

    words = engine("compare", ",".join(a), ",".join(b), cache=cache).stdout
    assert "Configuration B is better than A" in words and "unit of replication is the seed" in words

    for bad, message in (([a[0], "nope"], "nope"), ([a[0], a[0]], "both groups"), ([a[0], ","], "no run id")):
        done = engine("compare", *bad, "--json", cache=cache, check=False)
        assert done.returncode == 2 and message in done.stderr and done.stdout == ""
        assert "Traceback" not in done.stderr


def test_study_ablation_and_train_use_the_study_2019_inputs():
    from engine.cli import ablation_base, build_parser, config_from_args
    from engine.learn.presets import PRESETS

    parser = build_parser()
    assert ablation_base(parser.parse_args(["ablate", "--preset", "study"])).features.inputs == "librosa_0.7"
    assert ablation_base(parser.parse_args(["ablate", "--preset", "study", "--inputs", "librosa_0.11"])
                         ).features.inputs == "librosa_0.11"
    args = parser.parse_args(["train", "--preset", "study"])
    assert config_from_args(args, PRESETS[args.preset]).features.inputs == "librosa_0.7"
def test_predict_flips_and_agreement_over_several_runs(data, tmp_path):
    from engine.compare.stats import mcnemar_exact
    from engine.runs.store import RunStore

    cache = tmp_path / "cache"
    a, b = (json.loads(engine("train", "--data", str(data), *TINY, "--seed", seed, "--lr", lr, "--json",
                              cache=cache).stdout)["run_id"] for seed, lr in (("0", "0.001"), ("1", "0.01")))
    clip = next((data / "audio").glob("*test-3_*.wav"))
    entries = json.loads(engine("predict", "--run", f"{a},{b}", str(clip), "--json", cache=cache).stdout)
    assert [(e["run_id"], e["file"]) for e in entries] == [(a, str(clip)), (b, str(clip))]
    assert all(e["label"] in e["probabilities"] for e in entries)

    out = json.loads(engine("flips", a, b, "--split", "test", "--json", cache=cache).stdout)
    stored = RunStore(cache / "runs.sqlite", cache / "runs")
    pa, pb = stored.load_predictions(a)["test"], stored.load_predictions(b)["test"]
    assert pa["ids"] == pb["ids"]
    y = np.asarray(pa["y"])
    table = mcnemar_exact(np.argmax(pa["probs"], 1) == y, np.argmax(pb["probs"], 1) == y)
    assert out["n"] == table.n == len(y)
    assert (len(out["fixed"]), len(out["broken"])) == (table.b_only, table.a_only)
    for entry in out["fixed"] + out["broken"] + out["still_wrong"]:
        assert {"file", "true_label", "label_a", "label_b", "probabilities_a", "probabilities_b"} <= set(entry)

    grouped = json.loads(engine("flips", f"{a},{b}", b, "--json", cache=cache).stdout)
    assert grouped["runs_a"] == 2 and grouped["split"] == "validation"

    agree = json.loads(engine("agreement", f"{a},{b}", "--json", cache=cache).stdout)
    assert agree["runs"] == [a, b] and agree["agreement"][0][0] == 1.0
    assert 0.0 <= agree["agreement"][0][1] <= 1.0

    missing = engine("flips", a, "nosuchrun", "--json", cache=cache, check=False)
    assert missing.returncode == 2 and "nosuchrun" in missing.stderr and "Traceback" not in missing.stderr


def test_parse_seeds_takes_a_count_or_a_list():
    from engine.cli import parse_seeds
    from engine.core.errors import EngineError

    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("2", first=5) == [5, 6]  # a count starts at --seed
    assert parse_seeds("0,2,5", first=9) == [0, 2, 5]  # a list is taken as it is
    assert parse_seeds(" 7, ") == [7]  # one seed, as a list
    for bad in ("0", "-1", "x", "1,,2", "0,x", "1,1", ""):
        with pytest.raises(EngineError, match="--seeds"):
            parse_seeds(bad)


def test_train_and_ablate_take_both_forms_of_seeds(tiny_dataset, medley_cache, monkeypatch, capsys):
    from engine import cli
    from engine.learn import presets

    tiny = ["--data", str(tiny_dataset), "--hidden", "4", "--epochs", "1", "--batch-size", "16", "--json"]
    assert cli.main(["train", *tiny, "--seed", "3", "--seeds", "2", "--name", "n"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in runs] == ["seed 3 of n", "seed 4 of n"]
    monkeypatch.setitem(presets.ABLATIONS, "study", lambda base: presets.study_ablation(base)[:2])
    assert cli.main(["ablate", "--preset", "study", *tiny, "--seeds", "0,2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 2] and all(row["seeds"] == [0, 2] for row in out["rows"])
    assert cli.main(["ablate", "--preset", "study", *tiny, "--seeds", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [0, 1]
    assert cli.main(["ablate", "--preset", "study", *tiny, "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_an_unnamed_run_is_named_by_what_differs_from_its_preset(data, tmp_path):
    """Issue 16: `train --lr 1e-3` is "... lr 1e-3", as the Train page names it, not "study"."""
    cache = tmp_path / "cache"
    run = json.loads(engine("train", "--data", str(data), *TINY, "--lr", "1e-3", "--json", cache=cache).stdout)
    assert "lr 1e-3" in run["name"] and "hidden 8" in run["name"], run["name"]
    runs = json.loads(engine("train", "--data", str(data), *TINY, "--seeds", "2", "--json", cache=cache).stdout)
    assert [r["name"].split(" of ")[0] for r in runs] == ["seed 0", "seed 1"]
    assert {r["name"].split(" of ")[1] for r in runs} == {"hidden 8, batch 16, epochs 2"}  # one group, one name
