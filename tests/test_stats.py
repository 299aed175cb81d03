"""Tests for engine.stats against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engine.errors import EngineError
from engine.labels import CLASS_NAMES, SHORT_NAMES
from engine.stats import (
    McNemarResult,
    aggregate_histories,
    align_predictions,
    bootstrap_accuracy,
    bootstrap_difference,
    compare_groups,
    compare_runs,
    confusion_difference,
    describe_confusion_difference,
    format_p,
    generalisation_gap,
    group_correct,
    group_runs,
    mcnemar_exact,
    mean_std,
)


def exact_two_sided(b: int, c: int) -> float:
    """Exact McNemar by hand: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    n = b + c
    k = min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def paired(both_right: int, a_only: int, b_only: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both_right + [True] * a_only + [False] * b_only + [False] * both_wrong
    b = [True] * both_right + [False] * a_only + [True] * b_only + [False] * both_wrong
    return np.array(a), np.array(b)


def one_hot(labels, num_classes: int = 8, confidence: float = 0.9) -> list[list[float]]:
    rest = (1 - confidence) / (num_classes - 1)
    out = []
    for label in labels:
        row = [rest] * num_classes
        row[int(label)] = confidence
        out.append(row)
    return out


def make_pred(ids, y, pred) -> dict:
    return {"ids": list(ids), "y": [int(v) for v in y], "probs": one_hot(pred)}


# --------------------------------------------------------------------------- McNemar


def test_mcnemar_known_table_2_vs_10():
    a, b = paired(both_right=50, a_only=2, b_only=10, both_wrong=8)
    result = mcnemar_exact(a, b)
    assert isinstance(result, McNemarResult)
    assert (result.n, result.both_right, result.a_only, result.b_only, result.both_wrong) == (70, 50, 2, 10, 8)
    # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2**12 = 158 / 4096
    assert result.p_value == pytest.approx(158 / 4096, rel=1e-9)
    assert result.p_value == pytest.approx(0.0386, abs=5e-5)
    assert result.p_value == pytest.approx(exact_two_sided(2, 10))
    assert result.discordant == 12


def test_mcnemar_textbook_table():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1 (Bentur et al.):
    # airway hyper-responsiveness before/after stem cell transplantation, n = 21,
    # discordant 1 vs 7; exact conditional McNemar p = 0.070.
    a, b = paired(both_right=1, a_only=1, b_only=7, both_wrong=12)
    result = mcnemar_exact(a, b)
    assert result.p_value == pytest.approx(18 / 256)
    assert round(result.p_value, 3) == 0.070


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (5, 5), (13, 13), (1, 0), (0, 3), (7, 20)])
def test_mcnemar_matches_hand_binomial(a_only, b_only):
    a, b = paired(30, a_only, b_only, 4)
    assert mcnemar_exact(a, b).p_value == pytest.approx(exact_two_sided(a_only, b_only))


def test_mcnemar_symmetric_inputs_give_one():
    a, b = paired(10, 6, 6, 3)
    assert mcnemar_exact(a, b).p_value == pytest.approx(1.0)
    same = np.array([True, False, True, True])
    result = mcnemar_exact(same, same)
    assert result.p_value == 1.0 and result.discordant == 0


def test_mcnemar_is_symmetric_in_a_and_b():
    a, b = paired(20, 3, 11, 5)
    assert mcnemar_exact(a, b).p_value == pytest.approx(mcnemar_exact(b, a).p_value)


def test_mcnemar_length_mismatch_names_both_lengths():
    with pytest.raises(EngineError, match=r"5.*4"):
        mcnemar_exact(np.ones(5, bool), np.ones(4, bool))


def test_mcnemar_accepts_zero_one_and_rejects_other_values():
    assert mcnemar_exact(np.array([1, 0, 1]), np.array([0, 0, 1])).a_only == 1
    with pytest.raises(EngineError):
        mcnemar_exact(np.array([2, 0]), np.array([1, 0]))


# --------------------------------------------------------------------------- alignment


def test_align_keeps_intersection_in_a_order():
    pa = make_pred(["c1", "c2", "c3", "c4"], [0, 1, 2, 3], [0, 1, 1, 3])
    pb = make_pred(["c4", "c9", "c2", "c1"], [3, 5, 1, 0], [3, 5, 0, 0])
    ids, y, probs_a, probs_b = align_predictions(pa, pb)
    assert ids == ["c1", "c2", "c4"]
    assert y.tolist() == [0, 1, 3]
    assert probs_a.shape == probs_b.shape == (3, 8)
    assert probs_a.argmax(1).tolist() == [0, 1, 3]
    assert probs_b.argmax(1).tolist() == [0, 0, 3]


def test_align_errors():
    pa = make_pred(["c1", "c2"], [0, 1], [0, 1])
    with pytest.raises(EngineError, match="c2"):
        align_predictions(pa, make_pred(["c1", "c2"], [0, 4], [0, 1]))
    with pytest.raises(EngineError, match="share no clips"):
        align_predictions(pa, make_pred(["x", "y"], [0, 1], [0, 1]))
    with pytest.raises(EngineError, match="missing"):
        align_predictions(pa, {"ids": ["c1"], "y": [0]})
    with pytest.raises(EngineError, match="c1"):
        align_predictions(make_pred(["c1", "c1"], [0, 0], [0, 0]), pa)
    with pytest.raises(EngineError, match="must match"):
        align_predictions({"ids": ["c1", "c2"], "y": [0], "probs": one_hot([0, 1])}, pa)


# --------------------------------------------------------------------------- bootstrap


def synthetic(n: int, accuracy: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 8, size=n)
    right = rng.random(n) < accuracy
    wrong = (y + rng.integers(1, 8, size=n)) % 8
    return y, np.where(right, y, wrong)


def test_bootstrap_interval_covers_true_accuracy_mostly():
    rng = np.random.default_rng(123)
    true_acc = 0.7
    hits = 0
    reps = 50
    for rep in range(reps):
        y, pred = synthetic(200, true_acc, rng)
        ci = bootstrap_accuracy(y, pred, n_boot=400, seed=rep)["accuracy_ci"]
        hits += ci[0] <= true_acc <= ci[1]
    assert 0.85 <= hits / reps <= 1.0


def test_bootstrap_narrower_for_more_clips():
    rng = np.random.default_rng(7)
    y_small, p_small = synthetic(100, 0.7, rng)
    y_big, p_big = synthetic(2000, 0.7, rng)
    small = bootstrap_accuracy(y_small, p_small, n_boot=500)
    big = bootstrap_accuracy(y_big, p_big, n_boot=500)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(big["accuracy_ci"]) < width(small["accuracy_ci"]) / 2
    assert width(big["balanced_accuracy_ci"]) < width(small["balanced_accuracy_ci"])


def test_bootstrap_values_and_absent_class():
    # class 7 absent; class 0: 3 of 4 right; class 1: 1 of 2 right
    y = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 2, 1, 3])
    out = bootstrap_accuracy(y, pred, n_boot=300, seed=1)
    assert out["n"] == 6
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["balanced_accuracy"] == pytest.approx((0.75 + 0.5) / 2)
    assert out["per_class_accuracy"][:2] == pytest.approx([0.75, 0.5])
    assert out["per_class_accuracy"][2:] == [None] * 6
    assert out["per_class_ci"][7] is None
    assert out["per_class_n"] == [4, 2, 0, 0, 0, 0, 0, 0]
    low, high = out["accuracy_ci"]
    assert 0.0 <= low <= out["accuracy"] <= high <= 1.0
    low, high = out["per_class_ci"][0]
    assert 0.0 <= low <= 0.75 <= high <= 1.0


def test_bootstrap_accepts_probabilities_and_is_reproducible():
    rng = np.random.default_rng(0)
    y, pred = synthetic(150, 0.6, rng)
    probs = np.array(one_hot(pred))
    a = bootstrap_accuracy(y, probs, n_boot=200, seed=5)
    b = bootstrap_accuracy(y, pred, n_boot=200, seed=5)
    assert a["accuracy_ci"] == b["accuracy_ci"]
    assert a["balanced_accuracy_ci"] == b["balanced_accuracy_ci"]


def test_bootstrap_chunking_does_not_change_result(monkeypatch):
    import engine.stats as stats

    rng = np.random.default_rng(3)
    y, pred = synthetic(300, 0.65, rng)
    whole = bootstrap_accuracy(y, pred, n_boot=100, seed=9)
    monkeypatch.setattr(stats, "_BOOTSTRAP_BLOCK", 300 * 7)  # 7 resamples per block
    chunked = bootstrap_accuracy(y, pred, n_boot=100, seed=9)
    # numpy draws the same index stream whether it comes in one block or many
    for key in ("accuracy", "accuracy_ci", "balanced_accuracy_ci", "per_class_ci"):
        assert chunked[key] == whole[key]


def test_bootstrap_errors():
    with pytest.raises(EngineError, match="3.*2"):
        bootstrap_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(EngineError, match="0 clips"):
        bootstrap_accuracy([], [])
    with pytest.raises(EngineError, match="level"):
        bootstrap_accuracy([0], [0], level=95)
    with pytest.raises(EngineError, match="n_boot"):
        bootstrap_accuracy([0], [0], n_boot=0)
    with pytest.raises(EngineError, match="9"):
        bootstrap_accuracy([0, 9], [0, 1])


def test_paired_difference_excludes_zero_when_b_clearly_better():
    rng = np.random.default_rng(11)
    y, pred_a = synthetic(500, 0.6, rng)
    # B = A, plus 60 of A's mistakes fixed
    pred_b = pred_a.copy()
    wrong = np.flatnonzero(pred_a != y)[:60]
    pred_b[wrong] = y[wrong]
    out = bootstrap_difference(y, pred_a, pred_b, n_boot=1000)
    assert out["difference"] == pytest.approx(60 / 500)
    assert out["ci"][0] > 0 and out["excludes_zero"]
    assert out["prob_b_better"] == 1.0
    same = bootstrap_difference(y, pred_a, pred_a, n_boot=200)
    assert same["ci"] == (0.0, 0.0) and not same["excludes_zero"]


def test_paired_difference_straddles_zero_for_equal_runs():
    rng = np.random.default_rng(12)
    y, pred_a = synthetic(300, 0.65, rng)
    pred_b = np.where(rng.random(300) < 0.65, y, (y + 1) % 8)
    out = bootstrap_difference(y, pred_a, pred_b, n_boot=1000)
    assert out["ci"][0] < out["difference"] < out["ci"][1]


# --------------------------------------------------------------------------- compare_runs


def runs_with_table(both_right: int, a_only: int, b_only: int, both_wrong: int) -> tuple[dict, dict]:
    n = both_right + a_only + b_only + both_wrong
    ids = [f"clip{i:04d}" for i in range(n)]
    y = np.arange(n) % 8
    a_ok, b_ok = paired(both_right, a_only, b_only, both_wrong)
    pred_a = np.where(a_ok, y, (y + 1) % 8)
    pred_b = np.where(b_ok, y, (y + 2) % 8)
    return make_pred(ids, y, pred_a), make_pred(ids, y, pred_b)


def test_compare_runs_b_better():
    pa, pb = runs_with_table(300, 10, 45, 125)  # 480 clips: A 64.6%, B 71.9%
    out = compare_runs(pa, pb)
    assert out["n"] == 480
    assert out["mcnemar"]["p_value"] == pytest.approx(exact_two_sided(10, 45))
    assert out["better"] == "B" and out["significant"]
    assert out["sentence"] == (
        "B is better than A on the test set: 71.9% vs 64.6% accuracy, p < 0.001 (McNemar exact test on 480 clips)."
    )
    assert out["difference"]["ci"][0] > 0
    assert "B - A: +7.3 points" in out["detail"]


def test_compare_runs_a_better_with_names_and_whole_run_dicts():
    pa, pb = runs_with_table(50, 12, 3, 15)  # 80 clips, p = 2*P(X<=3 | 15) = 0.035
    p = exact_two_sided(12, 3)
    out = compare_runs({"test": pa, "validation": pa}, {"test": pb}, name_a="baseline", name_b="bigger")
    assert out["better"] == "baseline"
    assert out["sentence"] == (
        f"baseline is better than bigger on the test set: 77.5% vs 66.2% accuracy, "
        f"p = {p:.3f} (McNemar exact test on 80 clips)."
    )
    assert f"p = {p:.3f}" == "p = 0.035"


def test_compare_runs_indistinguishable():
    pa, pb = runs_with_table(100, 9, 12, 30)
    out = compare_runs(pa, pb, split="validation")
    assert not out["significant"] and out["better"] is None
    p = exact_two_sided(9, 12)
    assert out["sentence"] == (
        f"A and B are not distinguishable from noise on the validation set: 72.2% vs 74.2%, "
        f"p = {p:.2f} (McNemar exact test on 151 clips)."
    )


def test_compare_runs_missing_split():
    pa, pb = runs_with_table(10, 1, 1, 1)
    with pytest.raises(EngineError, match="test"):
        compare_runs({"validation": pa}, {"validation": pb})


def test_format_p():
    assert format_p(0.0004) == "p < 0.001"
    assert format_p(0.003) == "p = 0.003"
    assert format_p(0.0386) == "p = 0.039"
    assert format_p(0.41) == "p = 0.41"
    assert format_p(1.0) == "p = 1"


# --------------------------------------------------------------------------- seed groups


def test_group_runs_and_missing_key():
    rows = [
        {"run_id": "r1", "group_key": "g1"},
        {"run_id": "r2", "group_key": "g2"},
        {"run_id": "r3", "group_key": "g1"},
    ]
    groups = group_runs(rows)
    assert list(groups) == ["g1", "g2"]
    assert [r["run_id"] for r in groups["g1"]] == ["r1", "r3"]
    with pytest.raises(EngineError, match="r9"):
        group_runs([{"run_id": "r9"}])


def test_mean_std():
    mean, std, n = mean_std([0.6, 0.7, 0.8])
    assert (mean, n) == (pytest.approx(0.7), 3)
    assert std == pytest.approx(0.1)
    assert mean_std([0.5]) == (0.5, 0.0, 1)
    m, s, n = mean_std([None, float("nan")])
    assert n == 0 and math.isnan(m) and math.isnan(s)


def test_aggregate_histories_unequal_lengths():
    h1 = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.6}, {"epoch": 3, "val_accuracy": 0.7}]
    h2 = [{"epoch": 1, "val_accuracy": 0.3}, {"epoch": 2, "val_accuracy": 0.4}]
    h3 = [{"epoch": 1, "val_accuracy": 0.4}, {"epoch": 2, "val_accuracy": None}]
    df = aggregate_histories([h1, h2, h3], "val_accuracy")
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["epoch", "mean", "std", "min", "max", "n"]
    assert df["epoch"].tolist() == [1, 2, 3]
    assert df["n"].tolist() == [3, 2, 1]
    assert df["mean"].tolist() == pytest.approx([0.4, 0.5, 0.7])
    assert df["std"].tolist() == pytest.approx([0.1, np.std([0.6, 0.4], ddof=1), 0.0])
    assert df["min"].tolist() == pytest.approx([0.3, 0.4, 0.7])
    assert df["max"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    empty = aggregate_histories([], "val_loss")
    assert empty.empty and list(empty.columns) == ["epoch", "mean", "std", "min", "max", "n"]


def test_group_correct_and_compare_groups():
    ids = ["a", "b", "c", "d"]
    y = [0, 1, 2, 3]
    runs = [
        make_pred(ids, y, [0, 1, 2, 0]),  # right on a, b, c
        make_pred(ids, y, [0, 1, 0, 0]),  # right on a, b
        make_pred(["d", "c", "b", "a", "z"][:4], [3, 2, 1, 0], [3, 2, 0, 0]),  # right on d, c, a
    ]
    got_ids, got_y, mean = group_correct(runs)
    assert got_ids == ids and got_y.tolist() == y
    assert mean.tolist() == pytest.approx([1.0, 2 / 3, 2 / 3, 1 / 3])
    with pytest.raises(EngineError, match="label"):
        group_correct([runs[0], make_pred(ids, [0, 1, 2, 4], [0, 1, 2, 4])])

    # 60 clips: group A's majority right on 30, group B's on all 60
    n = 60
    ids = [f"k{i}" for i in range(n)]
    y = np.arange(n) % 8
    half = np.where(np.arange(n) < 30, y, (y + 1) % 8)
    group_a = [make_pred(ids, y, half) for _ in range(3)]
    group_b = [make_pred(ids, y, y), make_pred(ids, y, y), make_pred(ids, y, half)]
    out = compare_groups(group_a, group_b, name_a="small", name_b="large")
    assert out["mcnemar"]["a_only"] == 0 and out["mcnemar"]["b_only"] == 30
    assert out["better"] == "large"
    assert out["accuracy_a"] == pytest.approx((0.5, 0.0, 3))
    assert out["sentence"].startswith("large is better than small on the test set: 100.0% vs 50.0% accuracy, p < 0.001")


# --------------------------------------------------------------------------- confusion, gap


def test_confusion_difference_and_description():
    a = np.zeros((8, 8), dtype=int)
    b = np.zeros((8, 8), dtype=int)
    np.fill_diagonal(a, 20)
    np.fill_diagonal(b, 20)
    flute, clarinet, violin, trumpet = 3, 0, 7, 6
    a[flute, clarinet] = 15
    b[flute, clarinet] = 3
    b[flute, flute] += 12
    a[violin, trumpet] = 2
    b[violin, trumpet] = 7
    b[violin, violin] -= 5
    diff = confusion_difference(a, b)
    assert diff.shape == (8, 8) and diff.dtype.kind == "i"
    assert diff[flute, clarinet] == -12 and diff[violin, trumpet] == 5
    assert diff[flute, flute] == 12 and diff.sum() == 0
    lines = describe_confusion_difference(a, b, CLASS_NAMES)
    assert lines == [
        "B fixed 12 flute clips that A called clarinet",
        "B broke 5 violin clips, calling them trumpet (A: 2, B: 7)",
    ]
    assert describe_confusion_difference(a, b, SHORT_NAMES, top=1) == lines[:1]
    assert describe_confusion_difference(a, a, CLASS_NAMES) == []
    with pytest.raises(EngineError, match="shape"):
        confusion_difference(a, np.zeros((7, 7)))
    with pytest.raises(EngineError, match="3 class names"):
        describe_confusion_difference(a, b, ["x", "y", "z"])


def test_generalisation_gap():
    val = {"accuracy": 0.75, "balanced_accuracy": 0.7, "per_class_accuracy": [0.8, 0.6] + [None] * 6}
    test = {"accuracy": 0.6, "balanced_accuracy": 0.55, "per_class_accuracy": [0.5, 0.7, 0.9] + [None] * 5}
    gap = generalisation_gap({"validation": val, "test": test})
    assert gap["accuracy_gap"] == pytest.approx(0.15)
    assert gap["balanced_accuracy_gap"] == pytest.approx(0.15)
    assert gap["per_class_gap"][:2] == pytest.approx([0.3, -0.1])
    assert gap["per_class_gap"][2:] == [None] * 6
    assert (gap["validation_accuracy"], gap["test_accuracy"]) == (0.75, 0.6)
    with pytest.raises(EngineError, match="test"):
        generalisation_gap({"validation": val})
