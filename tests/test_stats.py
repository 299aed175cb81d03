"""Tests for engine.compare.stats against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.special import expit, logit

from engine.core.errors import EngineError
from engine.core.labels import CLASS_NAMES, SHORT_NAMES
from engine.compare.stats import (
    AGGREGATE_COLUMNS,
    McNemarResult,
    aggregate_histories,
    align_predictions,
    all_pairs,
    against_reference,
    bootstrap_accuracy,
    bootstrap_difference,
    compare_family,
    compare_groups,
    compare_run_groups,
    compare_runs,
    confusion_difference,
    correctness_matrix,
    generalisation_gap,
    group_correct,
    group_runs,
    holm,
    mcnemar_exact,
    mean_std,
    seed_level_test,
)
from engine.compare.verdicts import caveats, describe_confusion_difference, format_p, verdict


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
    import engine.compare.stats as stats

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
    assert out["difference"]["ci"][0] > 0
    assert out["difference"]["difference"] == pytest.approx(35 / 480)


def test_compare_runs_a_better_with_names_and_whole_run_dicts():
    pa, pb = runs_with_table(50, 12, 3, 15)  # 80 clips, p = 2*P(X<=3 | 15) = 0.035
    p = exact_two_sided(12, 3)
    out = compare_runs({"test": pa, "validation": pa}, {"test": pb}, split="test")
    assert out["better"] == "A" and out["split"] == "test"
    assert out["mcnemar"]["p_value"] == pytest.approx(p)
    assert format_p(p) == "p = 0.035"


def test_compare_runs_indistinguishable():
    pa, pb = runs_with_table(100, 9, 12, 30)
    out = compare_runs(pa, pb, split="validation")
    assert not out["significant"] and out["better"] is None
    assert out["mcnemar"]["p_value"] == pytest.approx(exact_two_sided(9, 12))


def test_compare_runs_missing_split():
    pa, pb = runs_with_table(10, 1, 1, 1)
    with pytest.raises(EngineError, match="test"):
        compare_runs({"validation": pa}, {"validation": pb}, split="test")


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
    rows = aggregate_histories([h1, h2, h3], "val_accuracy")
    assert all(list(row) == list(AGGREGATE_COLUMNS) for row in rows)
    col = {c: [row[c] for row in rows] for c in AGGREGATE_COLUMNS}
    assert col["epoch"] == [1, 2, 3]
    assert col["n"] == [3, 2, 1]
    assert col["mean"] == pytest.approx([0.4, 0.5, 0.7])
    assert col["std"] == pytest.approx([0.1, np.std([0.6, 0.4], ddof=1), 0.0])
    assert col["min"] == pytest.approx([0.3, 0.4, 0.7])
    assert col["max"] == pytest.approx([0.5, 0.6, 0.7])
    assert aggregate_histories([], "val_loss") == []


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


# --------------------------------------------------------------------------- seed-level group test
#
# Simulated comparisons: clip i has a difficulty p_i ~ Beta(3, 1.5) (mean accuracy ~67%), run r
# a seed offset u_r ~ N(0, tau) on the logit scale, and is right on clip i with probability
# expit(logit(p_i) + u_r (+ effect for group B)). tau = 0.15 gives a seed-to-seed spread of
# about 3.5 accuracy points on 200 clips (the demo's study runs spread 1-6 points).

N_NULL = 3000  # Monte-Carlo standard error of a 5% rate: sqrt(.05 * .95 / 3000) = 0.004
N_POWER = 1000  # standard error of an 80% power: 0.013


def simulate(k_a: int, k_b: int, nsim: int, *, tau: float = 0.15, effect: float = 0.0, n: int = 200,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(nsim, k_a, n) and (nsim, k_b, n) bool correctness of two simulated seed groups."""
    rng = np.random.default_rng(seed)
    lp = logit(rng.beta(3, 1.5, size=(nsim, 1, n)).clip(1e-4, 1 - 1e-4))
    ca = rng.random((nsim, k_a, n)) < expit(lp + rng.normal(0, tau, (nsim, k_a, 1)))
    cb = rng.random((nsim, k_b, n)) < expit(lp + rng.normal(0, tau, (nsim, k_b, 1)) + effect)
    return ca, cb


def mcnemar_p_batch(ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p for (nsim, n) correctness pairs, vectorised."""
    b = (ca & ~cb).sum(axis=-1)
    c = (~ca & cb).sum(axis=-1)
    return np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(b, c), b + c, 0.5))


def group_preds(correct: np.ndarray, ids: list[str], y: np.ndarray) -> list[dict]:
    """Per-run predictions dicts that are right exactly where `correct` (runs, n) says."""
    return [make_pred(ids, y, np.where(row, y, (y + 1) % 8)) for row in correct]


class Rec:
    def __init__(self, run_id: str, group_key: str):
        self.id, self.group_key = run_id, group_key


@pytest.mark.parametrize("k_a, k_b", [(2, 3), (3, 3), (3, 5), (5, 5), (1, 2), (1, 4), (2, 2)])
@pytest.mark.parametrize("tau", [0.0, 0.15, 0.4])
def test_seed_level_test_is_calibrated_under_the_null(k_a, k_b, tau):
    ca, cb = simulate(k_a, k_b, N_NULL, tau=tau, seed=k_a * 10 + k_b)
    p = seed_level_test(ca, cb)["p_value"]
    fpr = float(np.mean(p < 0.05))
    assert fpr <= 0.07, f"false-positive rate {fpr:.3f} at alpha 0.05 ({k_a} v {k_b}, tau {tau})"


def test_one_run_per_side_mcnemar_is_calibrated_for_two_models_of_one_distribution():
    # 1 v 1 falls back to McNemar: its null is "two models equally good on these clips' population".
    ca, cb = simulate(1, 1, N_NULL, tau=0.0, seed=11)
    p = mcnemar_p_batch(ca[:, 0], cb[:, 0])
    for k in range(5):  # the vectorised p is the engine's (scipy binomtest) p
        assert p[k] == pytest.approx(mcnemar_exact(ca[k, 0], cb[k, 0]).p_value)
    assert float(np.mean(p < 0.05)) <= 0.07


def test_one_run_per_side_cannot_judge_configurations():
    # With seed variation, two runs of one configuration often differ "significantly" by McNemar:
    # this is why 1 v 1 is scoped to the two runs and the page says so.
    ca, cb = simulate(1, 1, N_NULL, tau=0.4, seed=12)
    assert float(np.mean(mcnemar_p_batch(ca[:, 0], cb[:, 0]) < 0.05)) > 0.1
    ids = [f"c{i}" for i in range(200)]
    y = np.arange(200) % 8
    out = compare_groups(group_preds(ca[0], ids, y), group_preds(cb[0], ids, y))
    assert out["scope"] == "runs" and out["method"].startswith("McNemar") and out["too_few_seeds"]
    assert "not two configurations" in caveats(out)[0]


@pytest.mark.parametrize("k_a, k_b, power", [(3, 3, 0.3), (5, 5, 0.75)])
def test_seed_level_test_finds_a_real_effect(k_a, k_b, power):
    # effect 0.5 on the logit scale: about +8.5 accuracy points against a seed spread of ~3.5
    # (measured power: 3 v 3 0.40, 5 v 5 0.84 on 200 clips).
    ca, cb = simulate(k_a, k_b, N_POWER, effect=0.5, seed=3)
    found = seed_level_test(ca, cb)
    assert float(np.mean((found["p_value"] < 0.05) & (found["difference"] > 0))) >= power


def test_seed_level_test_matches_scipy_t_tests():
    ca, cb = simulate(2, 3, 200, seed=5)
    out = seed_level_test(ca, cb)
    acc_a, acc_b = ca.mean(axis=-1), cb.mean(axis=-1)
    checked = 0
    for k in range(200):
        ref = sps.ttest_ind(acc_b[k], acc_a[k], equal_var=False)
        ci = ref.confidence_interval(0.95)
        welch_se = (ci.high - ci.low) / 2 / sps.t.ppf(0.975, ref.df)
        assert out["seed_variance"][k] == pytest.approx(welch_se**2)
        assert out["df"][k] == pytest.approx(ref.df)
        se = out["se"][k]
        assert out["p_value"][k] == pytest.approx(2 * sps.t.sf(abs(out["difference"][k]) / se, ref.df))
        if out["clip_variance"][k] == 0:  # then it is exactly Welch's t-test
            checked += 1
            assert out["p_value"][k] == pytest.approx(ref.pvalue)
            assert (out["ci_low"][k], out["ci_high"][k]) == pytest.approx((ci.low, ci.high))
    assert checked >= 20
    # one run on a side: Student's pooled t-test
    ca, cb = simulate(1, 4, 50, seed=6)
    out = seed_level_test(ca, cb)
    for k in range(50):
        ref = sps.ttest_ind(cb[k].mean(axis=-1), ca[k].mean(axis=-1), equal_var=True)
        assert out["df"][k] == pytest.approx(3)
        if out["clip_variance"][k] == 0:
            assert out["p_value"][k] == pytest.approx(ref.pvalue)


def test_seed_level_clip_part_is_the_paired_bootstrap_variance_when_runs_agree():
    # Deterministic runs (every seed identical): no seed variance, the clip part is the variance of
    # the mean paired difference over clips, which scipy's bootstrap estimates too.
    rng = np.random.default_rng(8)
    a_row, b_row = rng.random(300) < 0.6, rng.random(300) < 0.7
    out = seed_level_test(np.stack([a_row] * 3), np.stack([b_row] * 2))
    assert out["seed_variance"] == 0.0
    d = b_row.astype(float) - a_row.astype(float)
    assert out["clip_variance"] == pytest.approx(d.var(ddof=1) / 300)
    boot = sps.bootstrap((d,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    assert math.sqrt(out["clip_variance"]) == pytest.approx(boot.standard_error, rel=0.1)


def test_compare_groups_reports_the_seed_level_numbers():
    n = 60
    ids = [f"k{i}" for i in range(n)]
    y = np.arange(n) % 8
    half = np.arange(n) < 30
    rng = np.random.default_rng(0)
    group_a = [rng.random(n) < 0.5 for _ in range(3)]
    group_b = [np.ones(n, bool), np.ones(n, bool), half]
    out = compare_groups(group_preds(np.stack(group_a), ids, y), group_preds(np.stack(group_b), ids, y))
    accs_a = [float(r.mean()) for r in group_a]
    assert out["scope"] == "configurations" and out["method"].startswith("two-level")
    assert (out["n_runs_a"], out["n_runs_b"], out["n"], out["split"]) == (3, 3, n, "validation")
    assert out["accuracy_a"] == pytest.approx(np.mean(accs_a))
    assert out["accuracy_b"] == pytest.approx(2.5 / 3)
    assert out["difference"] == pytest.approx(2.5 / 3 - np.mean(accs_a))
    assert out["spread_a"] == pytest.approx(np.std(accs_a, ddof=1))
    assert out["spread_b"] == pytest.approx(np.std([1, 1, 0.5], ddof=1))
    low, high = out["ci"]
    assert low < out["difference"] < high
    assert out["significant"] == (out["p_value"] < 0.05) and out["better"] == ("B" if out["significant"] else None)
    json_round = __import__("json").loads(__import__("json").dumps(out))
    assert json_round == out  # plain JSON numbers only


def test_identical_configurations_are_never_significant():
    n = 120
    ids = [f"k{i}" for i in range(n)]
    y = np.arange(n) % 8
    rng = np.random.default_rng(1)
    for k_a, k_b in [(1, 1), (2, 3), (3, 3), (3, 5), (5, 5)]:
        # B's runs are far better, but both groups are the same configuration (one group key)
        ca = rng.random((k_a, n)) < 0.3
        cb = rng.random((k_b, n)) < 0.9
        runs_a = [Rec(f"a{j}", "same") for j in range(k_a)]
        runs_b = [Rec(f"b{j}", "same") for j in range(k_b)]
        preds = {r.id: p for r, p in zip([*runs_a, *runs_b], [*group_preds(ca, ids, y), *group_preds(cb, ids, y)])}
        out = compare_run_groups(runs_a, runs_b, lambda r: {"validation": preds[r.id]})
        assert out["difference"] > 0.4 and out["same_configuration"]  # the numbers are still honest...
        assert not out["significant"] and out["better"] is None  # ...but no verdict of "better"
        assert "same configuration" in verdict(out)
        family = compare_family({"A": runs_a, "B": runs_b}, [("A", "B")], lambda r: {"validation": preds[r.id]})
        assert not family[0]["significant"]
        # and different group keys with the same data do come out significant
        other = [Rec(f"b{j}", "other") for j in range(k_b)]
        preds.update({r.id: preds[r.id] for r in other})
        found = compare_run_groups(runs_a, other, lambda r: {"validation": preds[r.id]})
        assert found["significant"] == (found["p_value"] < 0.05) and not found["same_configuration"]
        if min(k_a, k_b) >= 3 or k_a == k_b == 1:
            assert found["significant"] and found["better"] == "B"
    # one seed repeated (same predictions): nothing to see
    same = group_preds(np.stack([ca[0]] * 3), ids, y)
    out = compare_groups(same[:1], same[1:2])
    assert out["difference"] == 0 and out["p_value"] == 1.0 and not out["significant"]


def test_compare_run_groups_refuses_bad_input():
    pred = make_pred(["a", "b", "c"], [0, 1, 2], [0, 1, 1])
    load = lambda r: {"validation": pred, "test": pred}  # noqa: E731
    with pytest.raises(EngineError, match="both groups"):
        compare_run_groups([Rec("r1", "g")], [Rec("r1", "g"), Rec("r2", "g")], load)
    with pytest.raises(EngineError, match="split"):
        compare_run_groups([Rec("r1", "g")], [Rec("r2", "h")], load, split="training")
    with pytest.raises(EngineError, match="at least one run"):
        compare_groups([], [pred])
    with pytest.raises(EngineError, match="clip"):
        correctness_matrix([pred, make_pred(["a", "b"], [0, 1], [0, 1])], ["a", "b", "c"])


def test_holm_hand_checked():
    # Hand-checked: sorted p 0.01, 0.02, 0.03, 0.04 (m = 4) -> 0.04, 0.06, 0.06 (max with 0.06), 0.06 (max with 0.04).
    assert holm([0.03, 0.01, 0.04, 0.02]).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.001]).tolist() == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.04, 0.01]).tolist() == pytest.approx([0.9, 0.08, 0.03])  # 3 x .01, 2 x .04, 1 x .9
    assert holm([0.9, 0.8, 0.7]).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert holm([]).tolist() == []
    with pytest.raises(EngineError, match="p-values"):
        holm([0.1, 1.5])


def test_holm_against_statsmodels():
    from statsmodels.stats import multitest  # requirements-dev.txt: the check must run, not skip
    p = np.random.default_rng(0).random(12) ** 3
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def test_compare_family_holm_adjusts_every_row():
    n = 150
    ids = [f"k{i}" for i in range(n)]
    y = np.arange(n) % 8
    rng = np.random.default_rng(2)
    rates = {"base": 0.6, "lr": 0.62, "sgd": 0.3, "big": 0.85}
    units, preds = {}, {}
    for name, rate in rates.items():
        units[name] = [Rec(f"{name}{j}", name) for j in range(3)]
        for rec, p in zip(units[name], group_preds(rng.random((3, n)) < rate, ids, y)):
            preds[rec.id] = {"validation": p}
    assert against_reference(list(units), "base") == [("base", "lr"), ("base", "sgd"), ("base", "big")]
    assert len(all_pairs(list(units))) == 6
    rows = compare_family(units, against_reference(list(units), "base"), lambda r: preds[r.id])
    raw = [r["p_value"] for r in rows]
    assert [r["p_adjusted"] for r in rows] == pytest.approx(holm(raw).tolist())
    assert all(r["family_size"] == 3 and r["significant"] == (r["p_adjusted"] < 0.05) for r in rows)
    assert [r["better"] for r in rows][1:] == ["A", "B"]  # sgd worse, big better than base
    assert "Holm-adjusted" in verdict(rows[2], "base", "big")
    units["broken"] = [Rec("x", "x")]
    preds["x"] = {"validation": make_pred(["zz"], [0], [0])}
    rows = compare_family(units, [("base", "broken"), ("base", "big")], lambda r: preds[r.id])
    assert "error" in rows[0] and rows[1]["family_size"] == 1
