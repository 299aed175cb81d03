"""Issue #24 end to end: every run stores a temperature and an OOD threshold fitted on validation;
the Predictor (store and bundle) uses them and says so; runs from before still predict."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_jobs import synthetic_data, tiny_config  # noqa: E402
from test_predict import trained  # noqa: E402,F401  (the fixture: a tiny run saved in a fresh store)

from engine.learn import calibration
from engine.learn import ood
from engine.learn import trust  # noqa: E402
from engine.learn.batched import train_group  # noqa: E402
from engine.runs.export import load_bundle, model_bundle  # noqa: E402
from engine.features.extract import FeatureSet  # noqa: E402
from engine.predict.predictor import Predictor  # noqa: E402
from engine.runs.store import RunStore  # noqa: E402
from engine.learn.train import train_run  # noqa: E402


def test_a_run_stores_its_temperature_and_ood_threshold_fitted_on_validation(trained) -> None:
    store, run_id, data, result = trained
    record = store.get(run_id).metrics
    cal, check = record["calibration"], record["ood"]
    assert cal["fitted_on"] == ["validation"] and cal["temperature"] > 0 and cal["reason"] is None
    # the temperature is the NLL minimiser on validation, from the trained (rounded) probabilities too
    val_probs = np.asarray(result.predictions["validation"]["probs"])
    refit = calibration.fit_temperature(calibration.logits_from_probs(val_probs), data["validation"].y)
    assert cal["temperature"] == pytest.approx(refit, rel=1e-2)
    assert set(cal["splits"]) == {"validation", "test"} and "reliability_after" in cal["splits"]["test"]
    assert cal["splits"]["validation"]["nll_after"] <= cal["splits"]["validation"]["nll_before"] + 1e-9
    # the threshold accepts 95% of validation clips
    assert check["key"] == trust.OOD_METHOD and check["threshold"] is not None
    assert check["flagged"]["validation"] == pytest.approx(1 - ood.ACCEPT_RATE, abs=1 / len(data["validation"].y))
    reference = store.load_ood_reference(run_id)  # the kNN score's training embeddings, beside the weights
    assert reference["embeddings"].shape[0] == len(data["training"].y)
    np.testing.assert_array_equal(reference["embeddings"], result.ood_reference["embeddings"])
    meta = json.loads((store.runs_dir / run_id / "meta.json").read_text())
    assert meta["run"]["metrics"]["calibration"]["temperature"] == cal["temperature"]


def test_predictor_uses_calibrated_probabilities_and_says_so(trained) -> None:
    store, run_id, data, result = trained
    predictor = Predictor.from_store(store, run_id)
    t = predictor.temperature
    assert t == store.get(run_id).metrics["calibration"]["temperature"] and t != pytest.approx(1.0, abs=1e-3)
    stored_probs = np.asarray(result.predictions["test"]["probs"])
    np.testing.assert_allclose(predictor.predict_features(data["test"].x, calibrated=False), stored_probs, atol=1e-5)
    expected = softmax(calibration.logits_from_probs(stored_probs) / t, axis=1)
    np.testing.assert_allclose(predictor.predict_features(data["test"].x), expected, atol=1e-4)
    assert predictor.calibration.startswith("calibrated: temperature scaling")


def test_prediction_carries_an_ood_verdict_per_file_and_window(trained) -> None:
    store, run_id, _, _ = trained
    predictor = Predictor.from_store(store, run_id)
    noise = np.random.default_rng(0).standard_normal(22050 * 7).astype(np.float32) * 0.3
    pred = predictor.predict_samples(noise)
    verdict = pred.ood
    assert set(verdict) == {"score", "threshold", "unlike_training", "method"}
    assert verdict["threshold"] == store.get(run_id).metrics["ood"]["threshold"]
    assert verdict["unlike_training"] == (verdict["score"] > verdict["threshold"])
    assert (trust.UNLIKE_TRAINING in pred.warnings) == verdict["unlike_training"]
    assert len(pred.windows) >= 2 and all(w.unlike_training == (w.ood_score > verdict["threshold"]) for w in pred.windows)
    assert verdict["score"] == pytest.approx(np.mean([w.ood_score for w in pred.windows]))


def test_a_run_stored_before_the_change_predicts_uncalibrated_and_says_so(trained, tmp_path: Path) -> None:
    store, run_id, data, result = trained
    old = RunStore(tmp_path / "runs.sqlite", tmp_path / "runs")
    old_id = old.create_run(store.get(run_id).config, status="running")
    result_before = type(result)(**{**vars(result), "metrics": {k: v for k, v in result.metrics.items()
                                                                  if k not in trust.TRUST_KEYS}})
    old.save_result(old_id, result_before)
    predictor = Predictor.from_store(old, old_id)
    assert predictor.temperature is None and predictor.calibration == trust.UNCALIBRATED
    np.testing.assert_allclose(predictor.predict_features(data["test"].x),
                               np.asarray(result.predictions["test"]["probs"]), atol=1e-5)
    pred = predictor.predict_samples(np.sin(np.arange(22050 * 3) * 0.05).astype(np.float32) * 0.3)
    assert pred.ood["unlike_training"] is None and pred.ood["note"] == trust.NO_OOD_CHECK
    assert "uncalibrated" in pred.calibration


def test_bundles_carry_the_temperature_and_old_bundles_still_load(trained) -> None:
    store, run_id, data, _ = trained
    raw = model_bundle(store, run_id)
    loaded = load_bundle(raw)
    assert loaded.temperature == Predictor.from_store(store, run_id).temperature
    assert loaded.trust["ood"]["threshold"] == store.get(run_id).metrics["ood"]["threshold"]
    np.testing.assert_array_equal(loaded.ood_reference["embeddings"], store.load_ood_reference(run_id)["embeddings"])
    old = io.BytesIO()  # the same bundle as written before issue #24: metrics without calibration or ood
    with zipfile.ZipFile(io.BytesIO(raw)) as zf, zipfile.ZipFile(old, "w") as out:
        for name in zf.namelist():
            content = zf.read(name)
            if name == "ood_reference.pt":
                continue
            if name == "model.json":
                info = json.loads(content)
                info["metrics"] = {k: v for k, v in info["metrics"].items() if k not in trust.TRUST_KEYS}
                content = json.dumps(info).encode()
            out.writestr(name, content)
    before = load_bundle(old.getvalue())
    assert before.temperature is None and before.calibration == trust.UNCALIBRATED and before.ood_reference is None
    assert before.predict_features(data["test"].x).shape == (len(data["test"].y), 8)


def test_under_20_validation_clips_fit_nothing_and_store_why() -> None:
    config = tiny_config(epochs=1)
    data = synthetic_data(config)
    few = calibration.MIN_CLIPS - 1
    v = data["validation"]
    data["validation"] = FeatureSet(v.x[:few], v.y[:few], v.ids[:few])
    metrics = train_run(config, data, device="cpu").metrics
    assert metrics["calibration"]["temperature"] is None and f"has {few} clips" in metrics["calibration"]["reason"]
    assert metrics["ood"]["threshold"] is None and f"has {few} clips" in metrics["ood"]["reason"]
    assert "test" in metrics["calibration"]["splits"]  # still reported, before = after


def test_seed_groups_store_trust_like_single_runs() -> None:
    configs = [tiny_config(epochs=2, **{"train.seed": s}) for s in (0, 1)]
    data = synthetic_data(configs[0])
    grouped = train_group(configs, data, device="cpu")
    alone = train_run(configs[1], data, device="cpu")
    for key in ("calibration", "ood"):
        assert key in grouped[1].metrics
    assert grouped[1].metrics["calibration"]["temperature"] == pytest.approx(
        alone.metrics["calibration"]["temperature"], rel=1e-3)


def test_cli_predict_json_gives_the_ood_verdict_and_show_names_the_methods(trained, tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    from engine.cli import main

    store, run_id, _, _ = trained
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDLEY_CACHE", str(cache))  # main() sets it; monkeypatch restores it afterwards
    copy = RunStore(cache / "runs.sqlite", cache / "runs")
    new_id = copy.create_run(store.get(run_id).config, status="running")
    copy.save_result(new_id, trained[3])
    import soundfile as sf

    clip = tmp_path / "noise.wav"
    sf.write(clip, np.random.default_rng(1).standard_normal(22050 * 3).astype(np.float32) * 0.3, 22050)
    assert main(["--cache", str(cache), "predict", "--run", new_id, str(clip), "--json"]) == 0
    out = capsys.readouterr()
    entry = json.loads(out.out)[0]
    assert set(entry["ood"]) == {"score", "threshold", "unlike_training", "method"}
    assert isinstance(entry["ood"]["unlike_training"], bool) and entry["ood"]["method"] == ood.METHODS[trust.OOD_METHOD]
    assert entry["calibration"].startswith("calibrated") and "calibrated: temperature scaling" in out.err
    assert main(["--cache", str(cache), "show", new_id]) == 0
    shown = capsys.readouterr().out
    assert "Guo et al. 2017" in shown and "15 equal-width bins" in shown and "out-of-distribution check" in shown


def test_a_bundle_missing_its_reference_says_it_has_no_check(trained) -> None:
    store, run_id, _, _ = trained
    raw, stripped = model_bundle(store, run_id), io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf, zipfile.ZipFile(stripped, "w") as out:
        for name in zf.namelist():
            if name != "ood_reference.pt":
                out.writestr(name, zf.read(name))
    predictor = load_bundle(stripped.getvalue())
    assert predictor.temperature is not None  # still calibrated
    verdict = predictor.predict_samples(np.sin(np.arange(22050 * 3) * 0.05).astype(np.float32) * 0.3).ood
    assert verdict["unlike_training"] is None and verdict["note"] == trust.NO_REFERENCE
