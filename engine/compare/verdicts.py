"""Comparisons in words: the sentences the Compare page and `python -m engine compare` print.

The numbers come from `engine.compare.stats` (which holds no English); this module only phrases
them, so that the page and the command line say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .stats import ComparisonError, confusion_difference

# Why the seed is the unit (shown next to every group verdict).
SEED_METHOD_WHY = (
    "Method: the unit of replication is the seed. Per-seed accuracies give the seed-to-seed "
    "spread (Welch's t-test over seeds; Reimers & Gurevych 2017), and the paired per-clip "
    "difference adds how much the verdict could change on another sample of clips (two-level "
    "variance, Bouthillier et al. 2021); degrees of freedom come from the seeds alone, so few "
    "seeds mean a wide interval rather than a false claim."
)
MCNEMAR_METHOD_WHY = (
    "Method: McNemar's exact test on the clips exactly one of the two runs got right, and a paired "
    "bootstrap interval of the accuracy difference (Dietterich 1998)."
)
HOLM_NOTE = (
    "p-values are Holm-adjusted over the {m} comparisons in this table (Holm 1979): the chance of "
    "any false 'better' among them stays at most {alpha:.0%}."
)
TEST_SPLIT_NOTE = (
    "Choosing by the test split makes the test score an optimistic, selected number: choose on "
    "validation and keep test for the final report."
)


def format_p(p: float) -> str:
    """'p < 0.001', 'p = 0.003', 'p = 0.41', 'p = 1'."""
    if p is None or not np.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    if p < 0.1:
        return f"p = {p:.3f}"
    if p >= 0.995:
        return "p = 1"
    return f"p = {p:.2f}"


def split_words(split: str) -> str:
    """'test' -> 'the test set'."""
    return {"test": "the test set", "validation": "the validation set", "training": "the training set"}.get(
        split, f"the {split} split"
    )


def _points(x: float) -> str:
    return f"{x * 100:+.1f}"


def _runs(k: int) -> str:
    return "1 run" if k == 1 else f"{k} seeds"


def verdict(result: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """The one-line verdict of a `stats.compare_groups` / `compare_run_groups` result
    (with "p_adjusted" when it is part of a Holm-corrected family)."""
    where = split_words(result["split"])
    acc_a, acc_b, diff = result["accuracy_a"], result["accuracy_b"], result["difference"]
    low, high = result["ci"]
    adjusted = result.get("p_adjusted") if result.get("family_size", 1) > 1 else None
    p_text = format_p(result["p_value"]) + (f", Holm-adjusted {format_p(adjusted)}" if adjusted is not None else "")
    mean = "accuracy" if result["scope"] == "runs" else "mean accuracy"
    numbers = (
        f"{acc_b:.1%} vs {acc_a:.1%} {mean}, difference {_points(diff)} points "
        f"(95% interval {_points(low)} to {_points(high)}), {p_text}; "
        f"{_runs(result['n_runs_a'])} v {_runs(result['n_runs_b'])} on {result['n']} clips"
    )
    if result.get("same_configuration"):
        return (
            f"{name_a} and {name_b} are the same configuration (they differ only in the seed): "
            f"the difference is seed noise, never a finding. {name_b} {numbers}."
        )
    if result["significant"]:
        win, lose = (name_b, name_a) if diff > 0 else (name_a, name_b)
        what = "run" if result["scope"] == "runs" else "configuration"
        return f"{what.capitalize()} {win} is better than {lose} on {where}: {name_b} {numbers}."
    return f"{name_a} and {name_b} are not distinguishable from noise on {where}: {name_b} {numbers}."


def caveats(result: dict[str, Any], name_a: str = "A", name_b: str = "B") -> list[str]:
    """Notes that must stand next to a verdict: scope, too few seeds, the seed spread."""
    notes: list[str] = []
    if result["scope"] == "runs":
        notes.append(
            "One run per side: this compares two trained models, not two configurations; another seed of "
            "the same configuration can differ as much. Repeat both over 3 or more seeds to compare "
            "configurations."
        )
    else:
        notes.append(
            f"Seed-to-seed spread (std of per-seed accuracy): {name_a} ±{result['spread_a'] * 100:.1f} points "
            f"({_runs(result['n_runs_a'])}), {name_b} ±{result['spread_b'] * 100:.1f} points "
            f"({_runs(result['n_runs_b'])})."
        )
        if result.get("too_few_seeds"):
            low, high = result["ci"]
            notes.append(
                f"Too few seeds to resolve a difference: with {result['n_runs_a']} and {result['n_runs_b']} runs "
                f"only a difference beyond ±{(high - low) / 2 * 100:.1f} points could show; repeat over more seeds."
            )
    return notes


def method_why(result: dict[str, Any]) -> str:
    """Which test was used and why, in one paragraph."""
    return MCNEMAR_METHOD_WHY if result["scope"] == "runs" else SEED_METHOD_WHY


def describe_confusion_difference(
    conf_a: Any,
    conf_b: Any,
    class_names: Sequence[str],
    name_a: str = "A",
    name_b: str = "B",
    top: int = 5,
) -> list[str]:
    """The `top` largest changes between two confusion matrices, in words, biggest first.

    e.g. "B fixed 12 flute clips that A called clarinet" (actual flute predicted clarinet:
    12 fewer in B) and "B broke 5 violin clips, calling them trumpet (A: 2, B: 7)".
    Counts are net changes per cell. Empty list when the off-diagonal cells are equal.
    """
    diff = confusion_difference(conf_a, conf_b)
    a = np.asarray(conf_a)
    b = np.asarray(conf_b)
    if len(class_names) != diff.shape[0]:
        raise ComparisonError(f"{len(class_names)} class names given for a {diff.shape[0]}x{diff.shape[0]} confusion matrix")
    cells = [
        (abs(float(diff[i, j])), i, j)
        for i in range(diff.shape[0])
        for j in range(diff.shape[1])
        if i != j and diff[i, j] != 0
    ]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))

    def count(x: float) -> str:
        return f"{int(x)}" if float(x).is_integer() else f"{x:.1f}"  # a seed group's mean: 7.3, never 7.33333

    out = []
    for size, i, j in cells[: max(0, top)]:
        actual, predicted = class_names[i], class_names[j]
        if diff[i, j] < 0:
            out.append(f"{name_b} fixed {count(size)} {actual} clips that {name_a} called {predicted}")
        else:
            out.append(
                f"{name_b} broke {count(size)} {actual} clips, calling them {predicted} "
                f"({name_a}: {count(a[i, j])}, {name_b}: {count(b[i, j])})"
            )
    return out
