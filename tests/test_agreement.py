"""Flips between runs and agreement across runs: counts, ordering, groups, kappa."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from engine.compare.agreement import agreement_matrix, flips, group_vote
from engine.compare.stats import ComparisonError, mcnemar_exact


def _pred(labels, y, ids=None, confidence=0.7, num_classes=8, split="validation"):
    """Stored-prediction dict whose argmax is `labels`, with `confidence` on the chosen class."""
    labels = np.asarray(labels)
    probs = np.full((len(labels), num_classes), (1.0 - confidence) / (num_classes - 1))
    probs[np.arange(len(labels)), labels] = confidence
    ids = ids if ids is not None else [f"clip{i}" for i in range(len(labels))]
    return {split: {"ids": list(ids), "y": [int(v) for v in y], "probs": probs.tolist()}}


def test_flip_counts_equal_mcnemar_discordant_cells():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 8, 400)
    lab_a = np.where(rng.random(400) < 0.6, y, rng.integers(0, 8, 400))
    lab_b = np.where(rng.random(400) < 0.7, y, rng.integers(0, 8, 400))
    out = flips([_pred(lab_a, y)], [_pred(lab_b, y)])
    table = mcnemar_exact(lab_a == y, lab_b == y)
    assert out["n"] == 400
    assert out["counts"]["fixed"] == table.b_only == len(out["fixed"])
    assert out["counts"]["broken"] == table.a_only == len(out["broken"])
    both_wrong_changed = int(np.sum((lab_a != y) & (lab_b != y) & (lab_a != lab_b)))
    assert out["counts"]["still_wrong"] == both_wrong_changed
    assert sum(out["counts"].values()) == 400
    assert table.b_only > 0 and table.a_only > 0 and both_wrong_changed > 0


def test_flip_entries_name_labels_and_sort_by_change():
    y = [0, 1, 2, 3]
    a = _pred([0, 1, 5, 3], y, confidence=0.6)
    b_probs = _pred([0, 4, 2, 3], y, confidence=0.9)
    b_probs["validation"]["probs"][2] = [0.05, 0.05, 0.55, 0.05, 0.1, 0.1, 0.05, 0.05]  # a soft fix
    out = flips([a], [b_probs], class_names=["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"])
    assert [e["file"] for e in out["fixed"]] == ["clip2"]
    assert [e["file"] for e in out["broken"]] == ["clip1"]
    broken = out["broken"][0]
    assert (broken["true_label"], broken["label_a"], broken["label_b"]) == ("c1", "c1", "c4")
    assert broken["probabilities_b"]["c4"] == pytest.approx(0.9)
    assert 0.0 < out["fixed"][0]["change"] < broken["change"] <= 1.0


def test_flips_order_by_change_within_a_kind():
    y = [0, 0, 0]
    a = _pred([1, 1, 1], y)
    b = _pred([0, 0, 0], y)
    for i, conf in enumerate([0.3, 0.95, 0.6]):
        row = np.full(8, (1 - conf) / 7)
        row[0] = conf
        b["validation"]["probs"][i] = row.tolist()
    out = flips([a], [b])
    assert [e["file"] for e in out["fixed"]] == ["clip1", "clip2", "clip0"]


def test_group_vote_uses_plurality_and_counts_agreeing_seeds():
    y = [0, 0]
    seeds = [_pred([0, 1], y), _pred([0, 2], y), _pred([3, 1], y)]
    vote = group_vote(seeds, "validation")
    assert vote.labels.tolist() == [0, 1]
    assert vote.seeds_agreeing.tolist() == [2, 2]
    assert vote.seeds == 3


def test_group_flips_follow_the_majority_of_each_group():
    y = [0, 0, 0]
    group_a = [_pred([0, 1, 0], y), _pred([0, 1, 1], y), _pred([2, 1, 0], y)]  # votes 0, 1, 0
    group_b = [_pred([1, 0, 0], y), _pred([1, 0, 0], y)]  # votes 1, 0, 0
    out = flips(group_a, group_b)
    assert [e["file"] for e in out["broken"]] == ["clip0"]
    assert [e["file"] for e in out["fixed"]] == ["clip1"]
    assert out["fixed"][0]["seeds_agreeing_a"] == 3 and out["fixed"][0]["seeds_agreeing_b"] == 2
    assert (out["runs_a"], out["runs_b"]) == (3, 2)


def test_flips_use_only_clips_shared_by_both_sides():
    a = _pred([0, 1, 2], [0, 1, 2], ids=["x", "y", "z"])
    b = _pred([1, 1], [1, 2], ids=["y", "z"])
    out = flips([a], [b])
    assert out["n"] == 2
    assert [e["file"] for e in out["broken"]] == ["z"]


@pytest.mark.parametrize("bad", [{}, {"validation": {"ids": []}}, {"test": {"ids": ["a"], "y": [0], "probs": [[1.0]]}}])
def test_flips_explain_missing_predictions(bad):
    good = _pred([0], [0])
    with pytest.raises(ComparisonError, match="no predictions for the validation split"):
        flips([good], [bad])


def test_flips_reject_mismatched_labels_and_unknown_split():
    with pytest.raises(ComparisonError, match="label"):
        flips([_pred([0], [0])], [_pred([0], [1])])
    with pytest.raises(ComparisonError, match="split"):
        flips([_pred([0], [0])], [_pred([0], [0])], split="training")


def test_agreement_matrix_matches_sklearn_kappa():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 300)
    runs = {name: np.where(rng.random(300) < acc, y, rng.integers(0, 8, 300))
            for name, acc in (("a", 0.8), ("b", 0.7), ("c", 0.3))}
    out = agreement_matrix({k: _pred(v, y) for k, v in runs.items()})
    assert out["runs"] == ["a", "b", "c"] and out["n"] == 300
    agree, kappa = np.array(out["agreement"]), out["kappa"]
    assert np.allclose(np.diag(agree), 1.0)
    assert agree[0, 1] == pytest.approx(np.mean(runs["a"] == runs["b"]))
    assert agree[0, 1] == agree[1, 0]
    assert kappa[0][2] == pytest.approx(cohen_kappa_score(runs["a"], runs["c"]))
    assert kappa[0][1] > kappa[0][2]


def test_agreement_of_constant_predictions_has_no_kappa():
    y = [0, 1, 2]
    out = agreement_matrix({"a": _pred([4, 4, 4], y), "b": _pred([4, 4, 4], y)})
    assert out["agreement"][0][1] == 1.0
    assert out["kappa"][0][1] is None


def test_agreement_needs_two_runs():
    with pytest.raises(ComparisonError, match="two runs"):
        agreement_matrix({"a": _pred([0], [0])})
