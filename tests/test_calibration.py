"""engine.learn.calibration: ECE against scikit-learn's calibration_curve, NLL, the temperature fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.calibration import calibration_curve

from engine.learn import calibration


def sampled_logits(n: int, temperature: float, seed: int = 0, classes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n, classes) and labels drawn from softmax(logits / temperature): a model whose
    calibrated temperature is exactly `temperature`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, classes))
    probs = softmax(logits / temperature, axis=1)
    y = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, y


def ece_from_sklearn(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE built on sklearn.calibration.calibration_curve (uniform bins): per non-empty
    bin the accuracy and mean confidence from sklearn, weighted by the bin's share of clips."""
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(int)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=bins, strategy="uniform")
    counts = np.histogram(confidence, bins=np.linspace(0, 1, bins + 1))[0]
    counts = counts[counts > 0]
    return float(np.sum(counts * np.abs(accuracy - mean_confidence)) / len(y))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_ece_matches_sklearn_calibration_curve(temperature: float) -> None:
    logits, y = sampled_logits(3000, 1.0, seed=1)
    probs = softmax(logits / temperature, axis=1)
    ours = calibration.expected_calibration_error(probs, y)
    assert ours == pytest.approx(ece_from_sklearn(probs, y), abs=1e-12)
    assert ours > 0.0


def test_ece_of_a_miscalibrated_model_is_large_and_known() -> None:
    # every clip answered with confidence 0.9, right half the time: ECE = |0.5 - 0.9| = 0.4
    probs = np.full((100, 8), 0.1 / 7)
    probs[:, 0] = 0.9
    y = np.r_[np.zeros(50, dtype=int), np.ones(50, dtype=int)]
    assert calibration.expected_calibration_error(probs, y) == pytest.approx(0.4)
    rows = calibration.reliability_table(probs, y)
    assert len(rows) == calibration.ECE_BINS and sum(r["count"] for r in rows) == 100
    full = [r for r in rows if r["count"]]
    assert len(full) == 1 and full[0]["low"] < 0.9 <= full[0]["high"] and full[0]["accuracy"] == 0.5


def test_nll_matches_direct_formula() -> None:
    logits, y = sampled_logits(200, 1.0, seed=2)
    expected = -np.mean(np.log(softmax(logits / 2.0, axis=1)[np.arange(200), y]))
    assert calibration.negative_log_likelihood(logits, y, 2.0) == pytest.approx(expected)
    assert calibration.negative_log_likelihood(np.zeros((0, 8)), np.zeros(0)) is None


@pytest.mark.parametrize("true_t", [0.6, 1.0, 3.0])
def test_temperature_fit_recovers_a_known_temperature(true_t: float) -> None:
    logits, y = sampled_logits(4000, true_t, seed=3)
    fitted = calibration.fit_temperature(logits, y)
    assert fitted == pytest.approx(true_t, rel=0.1)
    # the fit lowers NLL against the unscaled logits whenever the true T is not 1
    if true_t != 1.0:
        assert calibration.negative_log_likelihood(logits, y, fitted) < calibration.negative_log_likelihood(logits, y)


def test_stored_probabilities_give_the_same_temperature_as_logits() -> None:
    logits, y = sampled_logits(2000, 2.0, seed=4)
    from_probs = calibration.logits_from_probs(softmax(logits, axis=1))
    assert calibration.fit_temperature(from_probs, y) == pytest.approx(calibration.fit_temperature(logits, y), rel=1e-3)


def test_calibrate_fits_on_validation_and_reports_every_split() -> None:
    val, test = sampled_logits(1000, 2.0, seed=5), sampled_logits(500, 2.0, seed=6)
    record = calibration.calibrate({"validation": val, "test": test})
    assert record["temperature"] == pytest.approx(2.0, rel=0.15) and record["reason"] is None
    assert record["fitted_on"] == ["validation"] and "Guo" in record["method"] and "15" in record["ece_method"]
    for split in ("validation", "test"):
        report = record["splits"][split]
        assert report["ece_after"] < report["ece_before"] and report["nll_after"] < report["nll_before"]
        assert len(report["reliability_before"]) == calibration.ECE_BINS


def test_too_few_validation_clips_fit_no_temperature_and_say_why() -> None:
    val = sampled_logits(calibration.MIN_CLIPS - 1, 2.0, seed=7)
    record = calibration.calibrate({"validation": val, "test": sampled_logits(50, 2.0, seed=8)})
    assert record["temperature"] is None
    assert f"{calibration.MIN_CLIPS - 1} clips" in record["reason"] and "not calibrated" in record["reason"]
    test = record["splits"]["test"]
    assert test["ece_after"] == test["ece_before"] and test["nll_after"] == test["nll_before"]


def test_non_finite_validation_outputs_fit_nothing_and_say_why() -> None:
    logits, y = sampled_logits(100, 1.0, seed=9)
    logits[3, 2] = np.nan
    record = calibration.calibrate({"validation": (logits, y), "test": sampled_logits(50, 1.0, seed=10)})
    assert record["temperature"] is None and "not all finite" in record["reason"]
    assert set(record["splits"]) == {"test"}  # no NaN reaches the stored record


def test_the_temperature_pools_validation_with_the_cross_collection_views_and_never_test() -> None:
    """A run's temperature is fitted on validation and every cross-collection validation view it
    has, pooled clip by clip (trust.CALIBRATION_VIEWS); test is only reported."""
    from engine.learn import trust
    val, shift, test = sampled_logits(400, 1.0, seed=9), sampled_logits(400, 4.0, seed=10), sampled_logits(400, 8.0, seed=11)
    record = calibration.calibrate({"validation": val, "validation_shift": shift, "test": test},
                                   fit_on=trust.CALIBRATION_VIEWS)
    pooled = calibration.fit_temperature(np.concatenate([val[0], shift[0]]), np.concatenate([val[1], shift[1]]))
    assert record["fitted_on"] == ["validation", "validation_shift"] and record["n_fit"] == 800
    assert record["temperature"] == pytest.approx(pooled)
    assert calibration.fit_temperature(*val) < record["temperature"] < calibration.fit_temperature(*shift)
    assert "test" not in trust.CALIBRATION_VIEWS and trust.CALIBRATION_VIEWS[0] == "validation"
    note = trust.calibration_note({"calibration": record})
    assert "fitted on validation and its cross-collection views (recording chain)" in note
    old = dict(record, fitted_on="validation")  # as the first calibrated runs stored it
    assert trust.calibration_note({"calibration": old}).endswith("fitted on validation")


def test_too_few_in_collection_clips_fit_nothing_even_with_views() -> None:
    few, shift = sampled_logits(calibration.MIN_CLIPS - 1, 2.0, seed=12), sampled_logits(300, 2.0, seed=13)
    record = calibration.calibrate({"validation": few, "validation_shift": shift}, fit_on=("validation", "validation_shift"))
    assert record["temperature"] is None and "validation split has" in record["reason"]
    assert record["fitted_on"] == ["validation"]
