"""Honest comparisons between runs: is a difference real, or could it be random?

Everything here is a pure function over numbers the store already keeps:

- per-split predictions ``{"ids": [...], "y": [...], "probs": [[C floats], ...]}``,
- ``evaluate()`` dicts (``"accuracy"``, ``"per_class_accuracy"``, ``"confusion"``, ...),
- training histories (lists of per-epoch dicts).

Two runs on the same clips are compared with McNemar's exact test (only the clips on
which exactly one run is right carry information) and a paired bootstrap interval for
the accuracy difference. Groups of runs that differ only in their seed are compared on
majority-vote correctness per clip (see `compare_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from .errors import EngineError
from .labels import NUM_CLASSES

# Upper bound on the number of elements of one (chunk, n) resample block.
_BOOTSTRAP_BLOCK = 2_000_000


class ComparisonError(EngineError):
    """Two runs (or groups of runs) cannot be compared: mismatched clips, labels or shapes."""


# --------------------------------------------------------------------------- McNemar


@dataclass(frozen=True)
class McNemarResult:
    """The 2x2 table of paired correctness and the exact two-sided McNemar p-value.

    a_only: clips A got right and B got wrong; b_only: the reverse.
    p_value: exact binomial test of b_only out of (a_only + b_only) discordant clips
    against 0.5; 1.0 when there are no discordant clips.
    """

    n: int
    both_right: int
    a_only: int
    b_only: int
    both_wrong: int
    p_value: float

    @property
    def discordant(self) -> int:
        """Clips on which exactly one of the two runs is right."""
        return self.a_only + self.b_only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_bool_vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ComparisonError(f"{name} must be a 1-D array of per-clip correctness, not shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ComparisonError(f"{name} must hold booleans (or 0/1), got values like {arr[~np.isin(arr, (0, 1))][:3].tolist()}")
        arr = arr.astype(bool)
    return arr


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemarResult:
    """McNemar's exact test on paired per-clip correctness.

    a_correct, b_correct: (n,) bool, whether run A / run B classified clip i correctly
    (same clips, same order). Raises ComparisonError when the lengths differ.
    """
    a = _as_bool_vector(a_correct, "a_correct")
    b = _as_bool_vector(b_correct, "b_correct")
    if a.shape[0] != b.shape[0]:
        raise ComparisonError(
            f"a_correct and b_correct must cover the same clips: lengths {a.shape[0]} and {b.shape[0]} differ"
        )
    both_right = int(np.sum(a & b))
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    both_wrong = int(np.sum(~a & ~b))
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(binomtest(b_only, discordant, 0.5).pvalue)
    return McNemarResult(
        n=int(a.shape[0]),
        both_right=both_right,
        a_only=a_only,
        b_only=b_only,
        both_wrong=both_wrong,
        p_value=min(1.0, p),
    )


# --------------------------------------------------------------------------- alignment


def _check_prediction(pred: Any, name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    if not isinstance(pred, dict):
        raise ComparisonError(f"{name} must be a dict with 'ids', 'y' and 'probs', not {type(pred).__name__}")
    missing = [key for key in ("ids", "y", "probs") if key not in pred]
    if missing:
        raise ComparisonError(f"{name} is missing {missing}; expected keys 'ids', 'y' and 'probs'")
    ids = [str(i) for i in pred["ids"]]
    y = np.asarray(pred["y"], dtype=np.int64).reshape(-1)
    probs = np.asarray(pred["probs"], dtype=np.float64)
    if probs.ndim != 2:
        if probs.size == 0:
            probs = probs.reshape(0, 0)
        else:
            raise ComparisonError(f"{name}['probs'] must be a (clips, classes) table, not shape {probs.shape}")
    if not (len(ids) == y.shape[0] == probs.shape[0]):
        raise ComparisonError(
            f"{name} has {len(ids)} ids, {y.shape[0]} labels and {probs.shape[0]} probability rows; they must match"
        )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = ""
        for clip in ids:
            if clip in seen:
                dup = clip
                break
            seen.add(clip)
        raise ComparisonError(f"{name} lists clip id {dup!r} more than once")
    return ids, y, probs


def align_predictions(
    pred_a: dict, pred_b: dict
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Match two runs' predictions clip by clip.

    pred_a, pred_b: {"ids": [n_a], "y": [n_a], "probs": [[C] x n_a]} (one split).
    Returns (ids, y, probs_a, probs_b): the clips present in both, in pred_a's order;
    y (m,) int64, probs_a and probs_b (m, C) float64.
    Raises ComparisonError if a shared clip has different labels in the two, the class
    counts differ, or no clip is shared.
    """
    ids_a, y_a, p_a = _check_prediction(pred_a, "pred_a")
    ids_b, y_b, p_b = _check_prediction(pred_b, "pred_b")
    pos_b = {clip: i for i, clip in enumerate(ids_b)}
    rows_a = [i for i, clip in enumerate(ids_a) if clip in pos_b]
    if not rows_a:
        raise ComparisonError(
            f"the two runs share no clips ({len(ids_a)} and {len(ids_b)} clips); were they trained on the same dataset?"
        )
    if p_a.shape[1] != p_b.shape[1]:
        raise ComparisonError(f"the runs predict different numbers of classes: {p_a.shape[1]} and {p_b.shape[1]}")
    rows_b = [pos_b[ids_a[i]] for i in rows_a]
    ia, ib = np.asarray(rows_a), np.asarray(rows_b)
    disagree = np.flatnonzero(y_a[ia] != y_b[ib])
    if disagree.size:
        k = int(disagree[0])
        clip = ids_a[rows_a[k]]
        raise ComparisonError(
            f"clip {clip!r} has label {int(y_a[ia][k])} in pred_a but {int(y_b[ib][k])} in pred_b "
            f"({disagree.size} clips disagree); the runs used different label files"
        )
    return [ids_a[i] for i in rows_a], y_a[ia].copy(), p_a[ia].copy(), p_b[ib].copy()


# --------------------------------------------------------------------------- bootstrap


def _labels(values: Any, name: str) -> np.ndarray:
    """Class ids (n,) from class ids or from (n, C) probabilities (argmax)."""
    arr = np.asarray(values)
    if arr.ndim == 2:
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise ComparisonError(f"{name} must be (n,) class ids or (n, classes) probabilities, not shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _check_bootstrap_args(n_boot: int, level: float) -> None:
    if int(n_boot) < 1:
        raise ComparisonError(f"n_boot must be at least 1, not {n_boot}")
    if not 0.0 < float(level) < 1.0:
        raise ComparisonError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")


def _resample_blocks(n: int, n_boot: int, seed: int) -> Iterable[np.ndarray]:
    """Yield (chunk, n) int arrays of resampled indices, n_boot rows in all."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _BOOTSTRAP_BLOCK // max(n, 1)))
    done = 0
    while done < n_boot:
        rows = min(chunk, n_boot - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def _interval(samples: np.ndarray, level: float) -> tuple[float, float] | None:
    """Percentile interval of the finite values of samples (n_boot,), or None if none are finite."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_accuracy(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    num_classes: int = NUM_CLASSES,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class accuracy with percentile bootstrap intervals.

    y_true: (n,) class ids. y_pred: (n,) class ids or (n, C) probabilities (argmax is taken).
    Clips are resampled with replacement n_boot times (one (chunk, n) index array per
    block of resamples, so memory stays bounded). Balanced accuracy is the mean recall
    over the classes present in y_true (in a resample, over those still present).
    Returns {"n", "n_boot", "level", "accuracy", "accuracy_ci": (low, high),
    "balanced_accuracy", "balanced_accuracy_ci", "per_class_accuracy": [C] (None where
    the class is absent from y_true), "per_class_ci": [C] ((low, high) or None),
    "per_class_n": [C] clips per class}.
    """
    _check_bootstrap_args(n_boot, level)
    y = _labels(y_true, "y_true")
    pred = _labels(y_pred, "y_pred")
    if y.shape[0] != pred.shape[0]:
        raise ComparisonError(f"y_true and y_pred must have the same length: {y.shape[0]} and {pred.shape[0]}")
    n = int(y.shape[0])
    if n == 0:
        raise ComparisonError("cannot bootstrap an accuracy over 0 clips")
    if num_classes < 1:
        raise ComparisonError(f"num_classes must be positive, not {num_classes}")
    for name, arr in (("y_true", y), ("y_pred", pred)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise ComparisonError(
                f"{name} holds class ids outside 0..{num_classes - 1} (e.g. {int(arr[(arr < 0) | (arr >= num_classes)][0])})"
            )
    correct = y == pred
    per_class_n = np.bincount(y, minlength=num_classes)
    hits = np.bincount(y, weights=correct.astype(np.float64), minlength=num_classes)
    present = per_class_n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        class_acc = np.where(present, hits / np.maximum(per_class_n, 1), np.nan)

    boot_acc = np.empty(n_boot)
    boot_bal = np.empty(n_boot)
    boot_class = np.full((n_boot, num_classes), np.nan)
    row = 0
    for idx in _resample_blocks(n, n_boot, seed):
        rows = idx.shape[0]
        ys = y[idx]  # (rows, n)
        cs = correct[idx]  # (rows, n)
        boot_acc[row : row + rows] = cs.mean(axis=1)
        for c in np.flatnonzero(present):
            in_class = ys == c
            count = in_class.sum(axis=1)
            good = (in_class & cs).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                boot_class[row : row + rows, c] = np.where(count > 0, good / np.maximum(count, 1), np.nan)
        block = boot_class[row : row + rows][:, present]
        valid = np.isfinite(block)
        boot_bal[row : row + rows] = np.where(valid, block, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
        row += rows

    return {
        "n": n,
        "n_boot": int(n_boot),
        "level": float(level),
        "accuracy": float(correct.mean()),
        "accuracy_ci": _interval(boot_acc, level),
        "balanced_accuracy": float(np.nanmean(class_acc[present])),
        "balanced_accuracy_ci": _interval(boot_bal, level),
        "per_class_accuracy": [float(a) if p else None for a, p in zip(class_acc, present)],
        "per_class_ci": [_interval(boot_class[:, c], level) if present[c] else None for c in range(num_classes)],
        "per_class_n": [int(k) for k in per_class_n],
    }


def bootstrap_difference(
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap interval for accuracy(B) - accuracy(A) on the same clips.

    y_true: (n,) class ids; pred_a, pred_b: (n,) class ids or (n, C) probabilities.
    The same resampled clips are scored for both runs, so clip difficulty cancels out.
    Returns {"n", "n_boot", "level", "accuracy_a", "accuracy_b", "difference" (B - A),
    "ci": (low, high), "excludes_zero": bool, "prob_b_better": share of resamples with B > A}.
    """
    _check_bootstrap_args(n_boot, level)
    y = _labels(y_true, "y_true")
    a = _labels(pred_a, "pred_a")
    b = _labels(pred_b, "pred_b")
    if not (y.shape[0] == a.shape[0] == b.shape[0]):
        raise ComparisonError(
            f"y_true, pred_a and pred_b must have the same length: {y.shape[0]}, {a.shape[0]} and {b.shape[0]}"
        )
    n = int(y.shape[0])
    if n == 0:
        raise ComparisonError("cannot bootstrap an accuracy difference over 0 clips")
    delta = (b == y).astype(np.float64) - (a == y).astype(np.float64)  # (n,) in {-1, 0, 1}
    boot = np.empty(n_boot)
    row = 0
    for idx in _resample_blocks(n, n_boot, seed):
        boot[row : row + idx.shape[0]] = delta[idx].mean(axis=1)
        row += idx.shape[0]
    ci = _interval(boot, level)
    assert ci is not None
    return {
        "n": n,
        "n_boot": int(n_boot),
        "level": float(level),
        "accuracy_a": float((a == y).mean()),
        "accuracy_b": float((b == y).mean()),
        "difference": float(delta.mean()),
        "ci": ci,
        "excludes_zero": bool(ci[0] > 0.0 or ci[1] < 0.0),
        "prob_b_better": float(np.mean(boot > 0.0)),
    }


# --------------------------------------------------------------------------- comparing two runs


def format_p(p: float) -> str:
    """'p < 0.001', 'p = 0.003', 'p = 0.41', 'p = 1'."""
    if not np.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    if p < 0.1:
        return f"p = {p:.3f}"
    if p >= 0.995:
        return "p = 1"
    return f"p = {p:.2f}"


def _split_words(split: str) -> str:
    return {"test": "the test set", "validation": "the validation set", "training": "the training set"}.get(
        split, f"the {split} split"
    )


def _split_predictions(pred: dict, split: str, name: str) -> dict:
    """Accept one split's predictions or a run's {"validation": ..., "test": ...} dict."""
    if isinstance(pred, dict) and "ids" not in pred:
        if split not in pred:
            raise ComparisonError(f"{name} has no predictions for split {split!r} (it has {sorted(pred)})")
        return pred[split]
    return pred


def _verdict(
    acc_a: float, acc_b: float, p: float, n: int, name_a: str, name_b: str, split: str, alpha: float, test: str
) -> tuple[str | None, str]:
    where = _split_words(split)
    if p < alpha and acc_a != acc_b:
        if acc_b > acc_a:
            win, lose, acc_w, acc_l = name_b, name_a, acc_b, acc_a
        else:
            win, lose, acc_w, acc_l = name_a, name_b, acc_a, acc_b
        return win, (
            f"{win} is better than {lose} on {where}: {acc_w:.1%} vs {acc_l:.1%} accuracy, "
            f"{format_p(p)} ({test} on {n} clips)."
        )
    return None, (
        f"{name_a} and {name_b} are not distinguishable from noise on {where}: "
        f"{acc_a:.1%} vs {acc_b:.1%}, {format_p(p)} ({test} on {n} clips)."
    )


def compare_runs(
    pred_a: dict,
    pred_b: dict,
    name_a: str = "A",
    name_b: str = "B",
    split: str = "test",
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Is run B better than run A on the same clips?

    pred_a, pred_b: one split's {"ids", "y", "probs"}, or a run's whole predictions dict
    ({"validation": ..., "test": ...}) from which `split` is taken. Clips are aligned by
    id (see `align_predictions`). The verdict uses McNemar's exact test at level `alpha`;
    the paired bootstrap interval of accuracy(B) - accuracy(A) is reported alongside.
    Returns {"split", "name_a", "name_b", "n", "accuracy_a", "accuracy_b", "mcnemar":
    McNemarResult as dict, "difference": bootstrap_difference dict, "significant": bool,
    "better": name of the better run or None, "sentence": verdict in words,
    "detail": the difference and its interval in words}.
    """
    if not 0.0 < alpha < 1.0:
        raise ComparisonError(f"alpha must be between 0 and 1 (e.g. 0.05), not {alpha}")
    ids, y, probs_a, probs_b = align_predictions(
        _split_predictions(pred_a, split, "pred_a"), _split_predictions(pred_b, split, "pred_b")
    )
    lab_a, lab_b = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    result = mcnemar_exact(lab_a == y, lab_b == y)
    diff = bootstrap_difference(y, lab_a, lab_b, n_boot=n_boot, seed=seed)
    acc_a, acc_b = diff["accuracy_a"], diff["accuracy_b"]
    better, sentence = _verdict(
        acc_a, acc_b, result.p_value, len(ids), name_a, name_b, split, alpha, "McNemar exact test"
    )
    low, high = diff["ci"]
    detail = (
        f"Accuracy difference {name_b} - {name_a}: {diff['difference'] * 100:+.1f} points "
        f"({diff['level']:.0%} bootstrap interval {low * 100:+.1f} to {high * 100:+.1f}); "
        f"{result.b_only} clips only {name_b} got right, {result.a_only} only {name_a}."
    )
    return {
        "split": split,
        "name_a": name_a,
        "name_b": name_b,
        "n": len(ids),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "mcnemar": result.to_dict(),
        "difference": diff,
        "significant": better is not None,
        "better": better,
        "sentence": sentence,
        "detail": detail,
    }


# --------------------------------------------------------------------------- seed groups


def group_runs(records: list[dict]) -> dict[str, list[dict]]:
    """Group run rows by their "group_key" (the config digest without the seed).

    records: rows as the store lists them, each with a "group_key". Groups keep the
    first-seen order of their keys and the order of rows inside them.
    """
    groups: dict[str, list[dict]] = {}
    for i, record in enumerate(records):
        key = record.get("group_key") if isinstance(record, dict) else None
        if not key:
            label = record.get("run_id", record.get("id", i)) if isinstance(record, dict) else i
            raise ComparisonError(f"run {label!r} has no 'group_key'; cannot group it with its seed repeats")
        groups.setdefault(str(key), []).append(record)
    return groups


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """(mean, sample std (ddof=1), n) of the finite values; std is 0.0 for one value,
    and (nan, nan, 0) when there are none."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    return float(arr.mean()), std, n


def aggregate_histories(histories: list[list[dict]], key: str) -> pd.DataFrame:
    """Per-epoch mean/std/min/max of `key` over several runs' histories.

    histories: one list of per-epoch dicts per run (each with "epoch", 1-based; position
    + 1 when absent). Runs of different lengths are aggregated over the runs that reached
    that epoch; missing or non-finite values are skipped.
    Returns a DataFrame with columns epoch, mean, std (ddof=1, 0.0 for one run), min, max, n,
    one row per epoch in increasing order (empty when there is nothing to aggregate).
    """
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for pos, record in enumerate(history):
            epoch = int(record.get("epoch", pos + 1))
            value = record.get(key)
            if value is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError) as exc:
                raise ComparisonError(f"history value {key!r} at epoch {epoch} is not a number: {value!r}") from exc
            if math.isfinite(value):
                by_epoch.setdefault(epoch, []).append(value)
    rows = []
    for epoch in sorted(by_epoch):
        vals = np.asarray(by_epoch[epoch])
        mean, std, n = mean_std(vals)
        rows.append({"epoch": epoch, "mean": mean, "std": std, "min": float(vals.min()), "max": float(vals.max()), "n": n})
    return pd.DataFrame(rows, columns=["epoch", "mean", "std", "min", "max", "n"])


def group_correct(preds: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-clip mean correctness over a group of runs (e.g. seed repeats).

    preds: one split's {"ids", "y", "probs"} per run. Clips are those present in every
    run, in the first run's order. Returns (ids, y (m,) int64, mean_correct (m,) float in
    [0, 1]: the share of the runs that classified the clip correctly).
    """
    if not preds:
        raise ComparisonError("group_correct needs at least one run's predictions")
    checked = [_check_prediction(p, f"run {k + 1} of the group") for k, p in enumerate(preds)]
    ids0 = checked[0][0]
    common = set(ids0)
    for ids, _, _ in checked[1:]:
        common &= set(ids)
    order = [clip for clip in ids0 if clip in common]
    if not order:
        raise ComparisonError(f"the {len(preds)} runs of the group share no clips")
    total = np.zeros(len(order))
    y_ref: np.ndarray | None = None
    for k, (ids, y, probs) in enumerate(checked):
        pos = {clip: i for i, clip in enumerate(ids)}
        rows = np.asarray([pos[clip] for clip in order])
        y_k = y[rows]
        if y_ref is None:
            y_ref = y_k
        elif not np.array_equal(y_ref, y_k):
            bad = int(np.flatnonzero(y_ref != y_k)[0])
            raise ComparisonError(
                f"clip {order[bad]!r} has label {int(y_ref[bad])} in run 1 but {int(y_k[bad])} in run {k + 1}"
            )
        total += probs[rows].argmax(axis=1) == y_k
    assert y_ref is not None
    return order, y_ref.copy(), total / len(preds)


def compare_groups(
    preds_a: list[dict],
    preds_b: list[dict],
    name_a: str = "A",
    name_b: str = "B",
    split: str = "test",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Compare two groups of seed repeats on the same clips.

    preds_a, preds_b: per-run predictions (one split's dict, or whole-run dicts from which
    `split` is taken). A clip counts as correct for a group when a strict majority of the
    group's runs got it right (mean correctness > 0.5; a tie counts as wrong), and McNemar's
    exact test is applied to these majority-vote correctness vectors. The group's mean
    accuracy ± std over its runs is reported alongside ("accuracy_a" = (mean, std, n)).
    Returns {"split", "name_a", "name_b", "n", "runs_a", "runs_b", "accuracy_a",
    "accuracy_b", "majority_accuracy_a", "majority_accuracy_b", "mcnemar",
    "significant", "better", "sentence"}.
    """
    if not preds_a or not preds_b:
        raise ComparisonError(f"each group needs at least one run: got {len(preds_a)} and {len(preds_b)}")
    runs_a = [_split_predictions(p, split, f"{name_a} run") for p in preds_a]
    runs_b = [_split_predictions(p, split, f"{name_b} run") for p in preds_b]
    ids_a, y_a, mean_a = group_correct(runs_a)
    ids_b, y_b, mean_b = group_correct(runs_b)
    ids, y, ca, cb = align_predictions(
        {"ids": ids_a, "y": y_a, "probs": mean_a[:, None]}, {"ids": ids_b, "y": y_b, "probs": mean_b[:, None]}
    )
    maj_a, maj_b = ca[:, 0] > 0.5, cb[:, 0] > 0.5
    result = mcnemar_exact(maj_a, maj_b)

    def run_accuracies(runs: list[dict]) -> tuple[float, float, int]:
        accs = []
        for run in runs:
            _, yy, pp = _check_prediction(run, "run")
            if yy.size:
                accs.append(float((pp.argmax(axis=1) == yy).mean()))
        return mean_std(accs)

    acc_a, acc_b = run_accuracies(runs_a), run_accuracies(runs_b)
    m_a, m_b = float(maj_a.mean()), float(maj_b.mean())
    better, sentence = _verdict(
        m_a, m_b, result.p_value, len(ids), name_a, name_b, split, alpha, "McNemar exact test on majority votes"
    )
    sentence += (
        f" Mean accuracy over seeds: {name_a} {acc_a[0]:.1%} ± {acc_a[1]:.1%} ({acc_a[2]} runs), "
        f"{name_b} {acc_b[0]:.1%} ± {acc_b[1]:.1%} ({acc_b[2]} runs)."
    )
    return {
        "split": split,
        "name_a": name_a,
        "name_b": name_b,
        "n": len(ids),
        "runs_a": len(runs_a),
        "runs_b": len(runs_b),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "majority_accuracy_a": m_a,
        "majority_accuracy_b": m_b,
        "mcnemar": result.to_dict(),
        "significant": better is not None,
        "better": better,
        "sentence": sentence,
    }


# --------------------------------------------------------------------------- confusion, generalisation


def _confusion(conf: Any, name: str) -> np.ndarray:
    arr = np.asarray(conf)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ComparisonError(f"{name} must be a square confusion matrix, not shape {arr.shape}")
    return arr


def confusion_difference(conf_a: Any, conf_b: Any) -> np.ndarray:
    """conf_b - conf_a, both (C, C) with rows = actual and columns = predicted.

    Negative off-diagonal cells are confusions B makes less often than A (fixes), positive
    ones confusions B makes more often (breaks). Integer dtype when both inputs are integral.
    """
    a = _confusion(conf_a, "conf_a")
    b = _confusion(conf_b, "conf_b")
    if a.shape != b.shape:
        raise ComparisonError(f"confusion matrices have different shapes: {a.shape} and {b.shape}")
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return b.astype(np.int64) - a.astype(np.int64)
    diff = b.astype(np.float64) - a.astype(np.float64)
    if np.allclose(diff, np.round(diff)):
        return np.round(diff).astype(np.int64)
    return diff


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
        return f"{int(x)}" if float(x).is_integer() else f"{x:g}"

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


def _maybe(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def generalisation_gap(metrics: dict) -> dict[str, Any]:
    """Validation minus test accuracy, overall and per class.

    metrics: {"validation": evaluate(...), "test": evaluate(...)}. A positive gap means the
    run looks better on validation than on test (e.g. because validation chose the epoch).
    Returns {"validation_accuracy", "test_accuracy", "accuracy_gap",
    "balanced_accuracy_gap" (None when missing), "per_class_gap": [C] (None where a class
    is absent from either split)}.
    """
    for split in ("validation", "test"):
        if not isinstance(metrics, dict) or not isinstance(metrics.get(split), dict):
            raise ComparisonError(f"metrics has no {split!r} evaluation; has the run finished?")
        if _maybe(metrics[split].get("accuracy")) is None:
            raise ComparisonError(f"metrics[{split!r}] has no accuracy")
    val, test = metrics["validation"], metrics["test"]
    bal_v, bal_t = _maybe(val.get("balanced_accuracy")), _maybe(test.get("balanced_accuracy"))
    pc_v = list(val.get("per_class_accuracy") or [])
    pc_t = list(test.get("per_class_accuracy") or [])
    per_class: list[float | None] = []
    for k in range(max(len(pc_v), len(pc_t))):
        v = _maybe(pc_v[k]) if k < len(pc_v) else None
        t = _maybe(pc_t[k]) if k < len(pc_t) else None
        per_class.append(None if v is None or t is None else v - t)
    return {
        "validation_accuracy": float(val["accuracy"]),
        "test_accuracy": float(test["accuracy"]),
        "accuracy_gap": float(val["accuracy"]) - float(test["accuracy"]),
        "balanced_accuracy_gap": None if bal_v is None or bal_t is None else bal_v - bal_t,
        "per_class_gap": per_class,
    }
