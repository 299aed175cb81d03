"""The seeds of one configuration averaged at prediction time (a deep ensemble, issue #24): which runs
make the group, what the ensemble answers (the mean of the members' calibrated probabilities, the
mean OOD score against a threshold fixed on its own mean validation score), the CLI's `predict --ensemble`, and the Predict page."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.special import softmax
import streamlit as st
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402
from test_app_predict import PAGE, TIMEOUT, tiny_runs  # noqa: E402

from engine.core.errors import StoreError  # noqa: E402
from engine.learn.batched import train_group  # noqa: E402
from engine.learn.ood import clip_statistics  # noqa: E402
from engine.learn.trust import window_ood  # noqa: E402
from engine.learn import calibration, ood, trust  # noqa: E402
from engine.predict.ensemble import EnsemblePredictor, ensemble_temperature, seed_group  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402

SEEDS = (2, 0, 1)  # stored in this order: seed_group must sort the siblings by seed


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, list[str], str]:
    """A store with three finished seeds of one tiny configuration (standardised, so each member has
    its own standardizer) and one run of another configuration; (store, seed run ids, other id)."""
    folder = tmp_path_factory.mktemp("ensemble")
    store = RunStore(folder / "runs.sqlite", folder / "runs")
    configs = [tiny_config(epochs=3, **{"train.standardize": True, "train.seed": s}) for s in SEEDS]
    data = synthetic_data(configs[0])
    ids = []
    for config, result in zip(configs, train_group(configs, data, device="cpu")):
        ids.append(store.create_run(config, status="running"))
        store.save_result(ids[-1], result)
    other = tiny_config(epochs=3, **{"model.hidden_size": 6})
    other_id = store.create_run(other, status="running")
    store.save_result(other_id, train_group([other], data, device="cpu")[0])
    return store, ids, other_id


def tone(seconds: float = 7.0, sr: int = 22050) -> np.ndarray:
    """A 440 Hz tone with a little noise: more than two 3-second windows."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(3)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_seed_group_is_the_run_then_its_siblings_by_seed_and_nothing_else(group) -> None:
    store, ids, other_id = group
    by_seed = dict(zip(SEEDS, ids))
    assert seed_group(store, ids[0]) == [by_seed[2], by_seed[0], by_seed[1]]
    assert seed_group(store, by_seed[1]) == [by_seed[1], by_seed[0], by_seed[2]]
    assert seed_group(store, other_id) == [other_id]


def test_a_sibling_trained_before_calibration_is_left_out_of_the_group(group, tmp_path: Path) -> None:
    store, ids, _ = group
    with sqlite3.connect(store.db_path) as source, sqlite3.connect(tmp_path / "runs.sqlite") as target:
        source.backup(target)  # the same runs in a copy of the database
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        metrics = json.loads(con.execute("SELECT metrics FROM runs WHERE id=?", (ids[2],)).fetchone()[0])
        old = {k: v for k, v in metrics.items() if k not in ("calibration", "ood")}  # as stored before issue #24
        con.execute("UPDATE runs SET metrics=? WHERE id=?", (json.dumps(old), ids[2]))
    copy = RunStore(tmp_path / "runs.sqlite", store.runs_dir)
    assert seed_group(copy, ids[0]) == [ids[0], ids[1]]  # seed 1's run (ids[2]) is left out
    assert seed_group(copy, ids[2]) == [ids[2]]


def test_the_ensemble_pools_the_seeds_then_calibrates_them_together(group) -> None:
    store, ids, _ = group
    ensemble = EnsemblePredictor.from_store(store, ids)
    members = ensemble.members
    # its temperature: fitted as a run's is, on log of the seeds' mean stored probabilities over the
    # validation views they share (never test), computed here independently
    stored = [store.load_predictions(run_id) for run_id in ids]
    views = [v for v in trust.CALIBRATION_VIEWS if v in stored[0]]
    assert "test" not in views and ensemble.fitted_on == views
    pooled = {v: np.log(np.clip(np.mean([s[v]["probs"] for s in stored], axis=0), 1e-12, None)) for v in views}
    expected_t = calibration.fit_temperature(np.concatenate([pooled[v] for v in views]),
                                             np.concatenate([stored[0][v]["y"] for v in views]))
    assert ensemble.temperature == pytest.approx(expected_t, rel=1e-6)
    y = tone()
    pred = ensemble.predict_samples(y)
    feats, _ = members[0].window_features(y)
    logits = [m.logits_features(feats)[0] for m in members]
    plain = np.mean([softmax(z.astype(np.float64), axis=1) for z in logits], axis=0)  # (windows, classes)
    expected = softmax(np.log(plain) / expected_t, axis=1)
    assert len(pred.windows) == len(feats) >= 2
    np.testing.assert_allclose([w.probabilities for w in pred.windows], expected, atol=1e-5)
    overall = expected.mean(axis=0)
    np.testing.assert_allclose(list(pred.probabilities.values()), overall / overall.sum(), atol=1e-5)
    assert pred.label == ensemble.class_names[int(np.argmax(overall))]
    own = [m.probabilities(z).mean(axis=0) for m, z in zip(members, logits)]  # each seed's own answer
    member_labels = [ensemble.class_names[int(np.argmax(p))] for p in own]
    assert pred.ensemble["agree"] == member_labels.count(pred.label)
    assert [m["label"] for m in pred.ensemble["members"]] == member_labels
    assert [m["seed"] for m in pred.ensemble["members"]] == list(SEEDS)
    assert "deep ensemble" in pred.calibration and f"T = {expected_t:.2f}" in pred.calibration


def test_the_ensemble_temperature_never_reads_test(group) -> None:
    store, ids, _ = group
    stored = [store.load_predictions(run_id) for run_id in ids]
    changed = [dict(s, test=dict(s["test"], probs=np.roll(s["test"]["probs"], 1, axis=1).tolist())) for s in stored]
    assert ensemble_temperature(changed) == ensemble_temperature(stored)
    changed = [dict(s, validation=dict(s["validation"], probs=np.roll(s["validation"]["probs"], 1, axis=1).tolist()))
               for s in stored]
    assert ensemble_temperature(changed)[0] != pytest.approx(ensemble_temperature(stored)[0], rel=1e-3)


def test_without_stored_predictions_the_ensemble_averages_calibrated_seeds_and_says_so(group) -> None:
    store, ids, _ = group
    members = [Predictor.from_store(store, run_id) for run_id in ids]
    ensemble = EnsemblePredictor(members)  # as from bundles: no stored predictions
    assert ensemble.temperature is None and "each seed's own temperature" in ensemble.calibration
    assert "no stored predictions" in ensemble.calibration
    y = tone()
    feats, _ = members[0].window_features(y)
    expected = np.mean([m.probabilities(m.logits_features(feats)[0]) for m in members], axis=0)
    pred = ensemble.predict_samples(y)
    np.testing.assert_allclose([w.probabilities for w in pred.windows], expected, atol=1e-6)
    few = [{"validation": dict(s["validation"], ids=s["validation"]["ids"][:10], y=s["validation"]["y"][:10],
                               probs=s["validation"]["probs"][:10])} for s in
           [store.load_predictions(run_id) for run_id in ids]]
    assert ensemble_temperature(few)[0] is None and "fewer than 20" in ensemble_temperature(few)[2]


def test_each_run_keeps_its_validation_scores_and_its_threshold_is_their_quantile(group) -> None:
    store, ids, _ = group
    for run_id in ids:
        kept = store.load_ood_reference(run_id)[trust.VALIDATION_SCORES]
        check = store.get(run_id).metrics["ood"]
        assert kept.shape == (len(store.load_predictions(run_id)["validation"]["ids"]),)
        assert ood.threshold_at(kept) == pytest.approx(check["threshold"], rel=1e-6)  # the same scores, kept in order


def test_the_ensemble_fixes_its_threshold_on_its_own_mean_validation_score(group) -> None:
    store, ids, _ = group
    ensemble = EnsemblePredictor.from_store(store, ids)
    mean = np.mean([m.ood_reference[trust.VALIDATION_SCORES] for m in ensemble.members], axis=0)
    threshold, how = ensemble.ood_threshold()
    assert threshold == pytest.approx(ood.threshold_at(mean)) and "95% of validation clips accepted" in how
    assert np.mean(mean > threshold) <= 1 - ood.ACCEPT_RATE + 1 / len(mean)  # flags at most 5% of validation
    old = EnsemblePredictor.from_store(store, ids)
    old.members[1].ood_reference = {k: v for k, v in old.members[1].ood_reference.items()
                                    if k != trust.VALIDATION_SCORES}  # a run stored before the scores were kept
    threshold, how = old.ood_threshold()
    assert threshold == pytest.approx(np.mean([m.trust["ood"]["threshold"] for m in old.members]))
    assert "mean of the seeds' thresholds" in how


def test_the_ensemble_ood_verdict_is_the_mean_score_against_its_threshold(group) -> None:
    store, ids, _ = group
    ensemble = EnsemblePredictor.from_store(store, ids)
    members = ensemble.members
    y = tone()
    pred = ensemble.predict_samples(y)
    feats, _ = members[0].window_features(y)
    scores = []
    for m in members:
        logits, embeddings = m.logits_features(feats)
        scores.append(window_ood(m.trust["ood"], logits, embeddings, m.ood_reference, clip_statistics(feats))[0])
    window_scores = np.mean(scores, axis=0)
    threshold = ensemble.ood_threshold()[0]
    np.testing.assert_allclose([w.ood_score for w in pred.windows], window_scores, rtol=1e-9)
    assert [w.unlike_training for w in pred.windows] == [bool(s > threshold) for s in window_scores]
    assert pred.ood["threshold"] == pytest.approx(threshold)
    assert pred.ood["score"] == pytest.approx(window_scores.mean())
    assert pred.ood["unlike_training"] == bool(window_scores.mean() > threshold)
    assert "mean over 3 seeds' scores" in pred.ood["method"]


def test_members_without_a_check_make_the_ensemble_say_so(group) -> None:
    store, ids, _ = group
    members = [Predictor.from_store(store, run_id) for run_id in ids]
    members[1].ood_reference = None  # e.g. a bundle without ood_reference.pt
    pred = EnsemblePredictor(members).predict_samples(tone())
    assert pred.ood["unlike_training"] is None and "not every run" in pred.ood["note"]
    assert all(w.ood_score is None for w in pred.windows)


def test_runs_that_cannot_be_averaged_are_refused_by_name(group) -> None:
    store, ids, other_id = group
    with pytest.raises(StoreError, match="at least two"):
        EnsemblePredictor([Predictor.from_store(store, ids[0])])
    mixed = [Predictor.from_store(store, ids[0]), Predictor.from_store(store, ids[1])]
    mixed[1].class_names = mixed[1].class_names[:-1] + ["kazoo"]
    with pytest.raises(StoreError, match="other classes"):
        EnsemblePredictor(mixed)
    frames = Predictor.from_store(store, ids[1])
    frames.config = frames.config.with_values(**{"features.frames": 5})
    with pytest.raises(StoreError, match="other feature settings"):
        EnsemblePredictor([Predictor.from_store(store, ids[0]), frames])


def test_cli_predict_ensemble_json_names_the_members(group, tmp_path: Path, capsys, monkeypatch) -> None:
    from engine.cli import main

    store, ids, other_id = group
    monkeypatch.setenv("MEDLEY_CACHE", str(store.db_path.parent))
    clip = tmp_path / "tone.wav"
    sf.write(clip, tone(), 22050)
    assert main(["--cache", str(store.db_path.parent), "predict", "--run", f"{ids[1]},{other_id},{ids[2]}",
                 "--ensemble", str(clip), "--json"]) == 0
    out = capsys.readouterr()
    results = json.loads(out.out)
    assert [r["run_id"] for r in results] == [ids[1], other_id]  # ids[2] is in ids[1]'s group: loaded once
    assert [m["run_id"] for m in results[0]["ensemble"]["members"]] == seed_group(store, ids[1])
    assert "ensemble" not in results[1]
    assert f"run {other_id}: no other finished seed" in out.err
    assert set(results[0]["ood"]) == {"score", "threshold", "unlike_training", "method"}
    assert main(["--cache", str(store.db_path.parent), "predict", "--run", ids[0], "--ensemble", str(clip)]) == 0
    assert "of 3 seeds agree" in capsys.readouterr().out


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory):
    """(cache, data, run ids) of two seeds of one tiny configuration on a tiny audio dataset."""
    with tiny_runs(tmp_path_factory, "ensemble_app", [("seed a", {"train.seed": 0}),
                                                      ("seed b", {"train.seed": 1})]) as made:
        yield made


def test_predict_page_averages_the_seeds_and_leads_the_panel_with_the_ensemble(two_seeds) -> None:
    _, _, ids = two_seeds
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    chosen = at.selectbox(key="run").value
    toggle = at.toggle(key="predict_ensemble")
    assert toggle.value is True and "2 seeds" in toggle.label  # on by default where a group exists
    at.multiselect(key="predict_many").set_value(ids).run()
    at.radio(key="predict_source").set_value("Dataset clip").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "deep ensemble" in captions and "seeds give this answer on their own" in captions
    assert "95% of validation clips accepted by that mean" in captions
    card = " ".join(str(m.value) for m in at.markdown)
    assert "**Answers**: the mean of 2 seeds of this configuration" in card and "calibrated together" in card
    text = "\n".join(str(m.value) for m in at.markdown)
    assert ": 2 models**" in text  # the ensemble (in place of the chosen run) and the other seed
    specs = [str(c.spec) for c in at.get("vega_lite_chart")]
    assert any("(mean of 2 seeds)" in s for s in specs)
    at.toggle(key="predict_ensemble").set_value(False).run()
    assert not at.exception
    assert "deep ensemble" not in " ".join(c.value for c in at.caption)
    specs = [str(c.spec) for c in at.get("vega_lite_chart")]
    assert not any("(mean of 2 seeds)" in s for s in specs) and at.selectbox(key="run").value == chosen
    st.cache_resource.clear()
    st.cache_data.clear()
