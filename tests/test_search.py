"""Search, then confirm (issue #26): the space, an Optuna study whose trials are runs on the real
job queue, pruning, resume after a restart, every-trial-diverges, and the confirmation."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from engine.core.search_space import SearchError, default_space, load_space, parse_space, read_space
from engine.runs.jobs import JobManager
from engine.runs.search import (PRUNED_TAG, SearchSpec, importances, resume_search, search_summary, start_search,
                                trial_rows)
from engine.runs.store import RunStore
from helpers_jobs import synthetic_data, tiny_config

SPACE = {"train.lr": {"low": 3e-3, "high": 3e-2, "log": True}, "model.hidden_size": [4, 8]}


@pytest.fixture
def env(tmp_path: Path):
    """A store, a thread-isolated JobManager on synthetic features, the search database path."""
    managers = []

    def manager(loader=synthetic_data) -> JobManager:
        m = JobManager(RunStore(tmp_path / "runs.sqlite", tmp_path / "runs"), data_loader=loader)
        managers.append(m)
        return m

    yield manager, tmp_path / "search.sqlite"
    for m in managers:
        m.shutdown()


# ---- the space ----------------------------------------------------------------------------


def test_space_round_trips_and_draws_by_field_type(tmp_path: Path) -> None:
    space = parse_space({**SPACE, "model.num_layers": {"low": 1, "high": 2}, "features.deltas": [False, True]})
    assert parse_space(json.loads(space.to_json())) == space
    kinds = {p.name: p.kind for p in space.params}
    assert kinds == {"train.lr": "float", "model.hidden_size": "choice", "model.num_layers": "int",
                     "features.deltas": "choice"}
    trial = optuna.create_study().ask()
    values = space.suggest(trial)
    assert 3e-3 <= values["train.lr"] <= 3e-2 and values["model.num_layers"] in (1, 2)
    assert isinstance(values["model.num_layers"], int)
    toml = tmp_path / "space.toml"
    toml.write_text('[train]\nlr = {low = 0.003, high = 0.03, log = true}\n[model]\nhidden_size = [4, 8]\n')
    assert load_space(toml) == parse_space(SPACE)
    assert default_space().names[0] == "train.lr"


@pytest.mark.parametrize("raw, words", [
    ({}, "empty"),
    ([1, 2], "object of dotted names"),
    ({"train.learning_rate": [1e-3]}, "not a configuration field"),
    ({"train.lr": {"low": 1e-2, "high": 1e-3}}, "must be below high"),
    ({"train.lr": {"low": 0.0, "high": 1e-3, "log": True}}, "log range needs low > 0"),
    ({"train.lr": {"low": 1e-3}}, "a range is"),
    ({"train.lr": []}, "empty list"),
    ({"train.optimizer": {"low": 1, "high": 2}}, "not a number"),
    ({"train.optimizer": ["adam", "lion"]}, "not a value this field takes"),
    ({"model.dropout": {"low": 0.0, "high": 1.5}}, "not a value this field takes"),
    ({"train.seed": [1, 2]}, "cannot be searched"),
    ({"model.hidden_size": {"low": 8.5, "high": 16}}, "whole number"),
])
def test_bad_spaces_are_refused_with_a_clear_message(raw, words) -> None:
    with pytest.raises(SearchError, match=words):
        parse_space(raw)


def test_malformed_space_text_is_refused() -> None:
    with pytest.raises(SearchError, match="not valid JSON"):
        read_space("{train.lr: 1", "json")
    with pytest.raises(SearchError, match="not valid TOML"):
        read_space("[train\n", "toml")
    with pytest.raises(SearchError, match="cannot read"):
        load_space("/nonexistent/space.json")


# ---- the search ---------------------------------------------------------------------------


def test_a_search_runs_its_trials_as_tagged_runs_on_the_job_queue(env) -> None:
    manager, db = env
    m = manager()
    spec = SearchSpec("s1", parse_space(SPACE), tiny_config(epochs=2), trials=3, pruner="none")
    start_search(spec, m, db).run()
    runs = m.store.list_runs(tag="search:s1")
    assert len(runs) == 3 and all(r.status == "finished" and len(r.history) == 2 for r in runs)
    assert {r.name for r in runs} == {f"trial {i} of s1" for i in range(3)}
    summary = search_summary("s1", db)
    assert summary["done"] == 3 and summary["counts"] == {"complete": 3}
    assert summary["objective_split"] == "validation" and "in-collection" in summary["note"]  # no cross views here
    best = max(runs, key=lambda r: r.metrics["validation"]["accuracy"])
    assert summary["best"]["value"] == pytest.approx(best.metrics["validation"]["accuracy"])
    with pytest.raises(SearchError, match="exists"):
        start_search(spec, m, db)
    assert set(importances("s1", db)) <= set(SPACE)


def test_pruning_stops_a_trial_that_is_behind_and_keeps_its_curves(env) -> None:
    """Two good trials first (lr 3e-2), then one that cannot learn in 4 epochs (lr 1e-5):
    the median pruner must stop it after its first epoch, below the others' median."""
    manager, db = env
    m = manager()
    space = parse_space({"train.lr": [3e-2, 1e-5]})
    spec = SearchSpec("p1", space, tiny_config(epochs=4), trials=3, pruner="median")
    search = start_search(spec, m, db)
    search.parallel = 1  # as below: the third trial starts after the two it is judged against have ended
    for lr in (3e-2, 3e-2, 1e-5):
        search.study.enqueue_trial({"train.lr": lr}, skip_if_exists=False)
    search.run()
    rows = trial_rows(search.study)
    assert [r.state for r in rows] == ["complete", "complete", "pruned"]
    pruned = m.store.get(rows[2].run_id)
    assert pruned.status == "cancelled" and PRUNED_TAG in pruned.tags and "search:p1" in pruned.tags
    assert 1 <= len(pruned.history) < 4  # stopped early, its epochs stored
    assert rows[2].epochs == len(pruned.history)


def test_a_search_resumes_after_a_restart(env) -> None:
    manager, db = env
    first = manager()
    spec = SearchSpec("r1", parse_space(SPACE), tiny_config(epochs=2), trials=4, pruner="none")
    search = start_search(spec, first, db)
    search.spec = SearchSpec("r1", spec.space, spec.base, trials=2, pruner="none")  # stop after 2, as if killed
    search.run()
    first.shutdown()
    # a trial left RUNNING by the dead process, its run never finished
    study = optuna.load_study(study_name="r1", storage=f"sqlite:///{db}")
    orphan = study.ask()
    orphan.set_user_attr("run_id", "r-gone")
    second = manager()
    resumed = resume_search("r1", second, db)
    assert resumed.spec.trials == 4 and resumed.counted() == 2
    resumed.run()
    summary = search_summary("r1", db)
    assert summary["done"] == 4 and summary["counts"]["complete"] == 4
    assert [r.why for r in trial_rows(resumed.study)].count("interrupted") == 1
    assert len(second.store.list_runs(tag="search:r1")) == 4


def test_a_search_whose_every_trial_diverges_says_so_and_keeps_its_runs(env) -> None:
    """Features with a NaN: every trial's loss is NaN at its first step, whatever the space draws."""
    manager, db = env
    m = manager()
    spec = SearchSpec("ok", parse_space(SPACE), tiny_config(epochs=1), trials=1, pruner="none")
    start_search(spec, m, db).run()  # a run finished before
    m.shutdown()

    def poisoned(config):
        data = synthetic_data(config)
        data["training"].x[0, 0, 0] = float("nan")
        return data

    m = manager(poisoned)
    spec = SearchSpec("d1", parse_space(SPACE), tiny_config(epochs=2), trials=2, pruner="none")
    with pytest.raises(SearchError, match="every trial of search .d1. diverged .*lower train.lr"):
        start_search(spec, m, db).run()
    runs = m.store.list_runs(tag="search:d1")
    assert len(runs) == 2 and all(r.status == "diverged" for r in runs)
    assert [r.status for r in m.store.list_runs(tag="search:ok")] == ["finished"]


def test_a_trial_run_can_be_cancelled_and_its_trial_fails(env) -> None:
    manager, db = env
    m = manager()
    spec = SearchSpec("c1", parse_space(SPACE), tiny_config(epochs=2), trials=1, pruner="none")
    search = start_search(spec, m, db)
    original = search._queue_one

    def queue_and_cancel() -> bool:
        ok = original()
        for run_id in list(search._inflight):
            m.cancel(run_id)
        return ok

    search._queue_one = queue_and_cancel
    search.run()
    [row] = trial_rows(search.study)
    assert row.state == "fail" and row.why == "cancelled"
    assert m.store.get(row.run_id).status == "cancelled"


# ---- confirm ------------------------------------------------------------------------------


def test_confirm_retrains_the_top_configurations_with_fresh_seeds(env) -> None:
    from engine.compare.confirm import confirm_verdict, format_verdict, plan_confirmation, queue_confirmation

    manager, db = env
    m = manager()
    spec = SearchSpec("f1", parse_space(SPACE), tiny_config(epochs=2), trials=3, pruner="none")
    start_search(spec, m, db).run()
    with pytest.raises(SearchError, match="trained the search itself"):
        plan_confirmation("f1", seeds=[0, 1], path=db)
    plan = plan_confirmation("f1", top=2, seeds=2, path=db)
    assert plan.rows[0][0] == "preset" and len(plan.rows) == 3
    assert set(plan.seeds).isdisjoint(plan.search_seeds) and plan.search_seeds == (0,)
    ids = queue_confirmation(m, plan)
    assert m.wait(ids, timeout=60)
    verdict = confirm_verdict(plan, [m.record(i) for i in ids], m.store)
    assert "seed-level" in verdict["method"] and "Holm" in verdict["method"]
    assert verdict["split"] == "validation" and len(verdict["comparisons"]) == 2
    for c in verdict["comparisons"]:
        assert c["family_size"] == 2 and c["ci"][0] <= c["difference"] <= c["ci"][1] and "points" in c["words"]
    assert verdict["choice"] in {"preset", "trial 0", "trial 1", "trial 2"}
    text = format_verdict(verdict)
    assert text.index("decision:") < text.index("read after the decision")
    json.dumps(verdict)
    assert {r.config.train.seed for r in m.store.list_runs(tag="confirm:f1")} == set(plan.seeds)


# ---- the command line ---------------------------------------------------------------------


def test_cli_search_and_confirm_refuse_bad_input_and_keep_runs(medley_cache: Path, tmp_path: Path, capsys) -> None:
    from engine.cli import main

    bad = tmp_path / "space.json"
    for text, words in (("{}", "empty"), ('{"train.lr": {"low": 1, "high": 0.1}}', "must be below high"),
                        ('{"lr": [0.1]}', "not a configuration field"), ("{oops", "not valid JSON")):
        bad.write_text(text)
        assert main(["search", "--space", str(bad), "--trials", "1", "--data", "demo:tiny"]) == 2
        assert words in capsys.readouterr().err
    assert main(["search", "--resume", "nothing"]) == 2
    assert "no search named 'nothing'" in capsys.readouterr().err
    assert main(["confirm", "nothing"]) == 2
    assert "no search named" in capsys.readouterr().err


def test_stopping_a_search_cancels_its_running_trial_and_resume_continues(env) -> None:
    """stop() from another thread (the page's button, Ctrl-C): the running trial's run is
    cancelled, its trial is not counted, and a resumed search trains the trials left."""
    import threading

    manager, db = env
    m = manager()
    spec = SearchSpec("x1", parse_space(SPACE), tiny_config(epochs=200), trials=2, pruner="none")
    search = start_search(spec, m, db)
    started = threading.Event()
    original = search._queue_one

    def queue_then_signal() -> bool:
        ok = original()
        started.set()
        return ok

    search._queue_one = queue_then_signal
    worker = threading.Thread(target=search.run)
    worker.start()
    assert started.wait(30)
    search.stop()
    worker.join(60)
    assert not worker.is_alive()
    [row] = trial_rows(search.study)
    assert row.state == "fail" and row.why == "stopped" and m.store.get(row.run_id).status == "cancelled"
    resumed = resume_search("x1", m, db)
    assert resumed.counted() == 0
    resumed.spec = SearchSpec("x1", spec.space, tiny_config(epochs=1), trials=2, pruner="none")  # quicker trials
    resumed.run()
    assert [r.state for r in trial_rows(resumed.study)] == ["fail", "complete", "complete"]


def test_cli_search_then_confirm_json(medley_cache: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """`search` and `confirm --json` through the CLI's own JobManager (thread isolation); only
    the data loader is swapped for synthetic features (no audio to decode)."""
    from engine.cli import main
    from engine.runs import jobs

    monkeypatch.setattr(jobs, "_default_loader", lambda config, device, progress: synthetic_data(config))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    flags = ["--preset", "study", "--hidden", "8", "--layers", "1", "--batch-size", "16", "--epochs", "2"]
    assert main(["search", "--name", "cli1", "--space", str(space), "--trials", "3", "--json", *flags]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["done"] == 3 and summary["best"] is not None and summary["seeds"] == [0]
    assert main(["search", "--name", "cli1", "--space", str(space), "--trials", "3", *flags]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["confirm", "cli1", "--top", "1", "--seeds", "2", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["seeds"] == [1, 2] and verdict["search_seeds"] == [0]
    assert "Holm" in verdict["method"] and len(verdict["comparisons"]) == 1
    assert list(verdict).index("decision") < list(verdict).index("after_decision")
    assert main(["runs", "--tag", "search:cli1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_pruning_by_reading_stored_epochs_when_the_run_trains_elsewhere(env, monkeypatch) -> None:
    """Without the in-process epoch hook (as for a worker process or Ray) the search reads the
    stored epochs and cancels: the long trial behind the others stops long before its end. Long: a
    trial that can end between two polls (0.2 s) is told "complete" (it was; under load 400 tiny
    epochs did), so it must last far longer than a poll."""
    from engine.runs import search as search_module

    monkeypatch.setattr(search_module, "_attach", lambda manager, judge: None)
    manager, db = env
    m = manager()
    space = parse_space({"train.lr": [3e-2, 1e-5], "train.epochs": [3, 4000]})
    search = start_search(SearchSpec("q1", space, tiny_config(), trials=3, pruner="median"), m, db)
    search.parallel = 1  # one trial at a time: the median pruner judges only after 2 trials have ended, and
    # a trial judged while the second still ran could never be pruned at the steps the others reported
    for lr, epochs in ((3e-2, 3), (3e-2, 3), (1e-5, 4000)):
        search.study.enqueue_trial({"train.lr": lr, "train.epochs": epochs})
    search.run()
    rows = trial_rows(search.study)
    assert [r.state for r in rows] == ["complete", "complete", "pruned"]
    pruned = m.store.get(rows[2].run_id)
    assert pruned.status == "cancelled" and PRUNED_TAG in pruned.tags and len(pruned.history) < 4000


def test_confirm_refuses_what_it_cannot_decide(env) -> None:
    from engine.compare.confirm import _decision, plan_confirmation

    manager, db = env
    m = manager()
    with pytest.raises(SearchError, match="no search named"):
        plan_confirmation("none", path=db)
    spec = SearchSpec("same", parse_space({"model.hidden_size": [8]}), tiny_config(epochs=1), trials=1, pruner="none")
    start_search(spec, m, db).run()  # its only trial is the base itself (hidden 8)
    with pytest.raises(SearchError, match="nothing to confirm"):
        plan_confirmation("same", path=db)
    with pytest.raises(SearchError, match="at least 2 fresh seeds"):
        plan_confirmation("same", seeds=1, path=db)
    with pytest.raises(SearchError, match="at least the best"):
        plan_confirmation("same", top=0, path=db)
    words = _decision("preset", [{"row": "trial 0", "error": "clips differ"}], "validation")
    assert words.startswith("no decision") and "clips differ" in words
