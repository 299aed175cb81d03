"""Honest comparisons between runs: is a difference real, or could it be random?

Everything here is a pure function over numbers the store already keeps:

- per-split predictions ``{"ids": [...], "y": [...], "probs": [[C floats], ...]}``,
- ``evaluate()`` dicts (``"accuracy"``, ``"per_class_accuracy"``, ``"confusion"``, ...),
- training histories (lists of per-epoch dicts).

Two runs on the same clips are compared with McNemar's exact test (only the clips on
which exactly one run is right carry information) and a paired bootstrap interval for
the accuracy difference. Groups of seed repeats are compared with a two-level t-test whose
unit of replication is the seed (`seed_level_test`, `compare_groups`); several comparisons
at once are Holm-corrected (`compare_family`). Only numbers here: the words that the page
and the command line print are in `engine.compare.verdicts`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ..core.errors import EngineError
from ..core.labels import NUM_CLASSES
from ..learn.metrics import EVAL_SPLITS

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


def _split_predictions(pred: dict, split: str, name: str) -> dict:
    """Accept one split's predictions or a run's {"validation": ..., "test": ...} dict."""
    if isinstance(pred, dict) and "ids" not in pred:
        if split not in pred:
            raise ComparisonError(f"{name} has no predictions for split {split!r} (it has {sorted(pred)})")
        return pred[split]
    return pred


def compare_runs(
    pred_a: dict,
    pred_b: dict,
    split: str = "validation",
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Is run B better than run A on the same clips?

    pred_a, pred_b: one split's {"ids", "y", "probs"}, or a run's whole predictions dict
    ({"validation": ..., "test": ...}) from which `split` is taken. Clips are aligned by
    id (see `align_predictions`). The verdict uses McNemar's exact test at level `alpha`;
    the paired bootstrap interval of accuracy(B) - accuracy(A) is reported alongside.
    Returns {"split", "n", "accuracy_a", "accuracy_b", "mcnemar": McNemarResult as dict,
    "difference": bootstrap_difference dict, "significant": bool, "better": "A", "B" or
    None}. Words for it: `engine.compare.verdicts`.
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
    significant = result.p_value < alpha and acc_a != acc_b
    return {
        "split": split,
        "n": len(ids),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "mcnemar": result.to_dict(),
        "difference": diff,
        "significant": bool(significant),
        "better": ("B" if acc_b > acc_a else "A") if significant else None,
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


AGGREGATE_COLUMNS: tuple[str, ...] = ("epoch", "mean", "std", "min", "max", "n")


def aggregate_histories(histories: list[list[dict]], key: str) -> list[dict[str, float]]:
    """Per-epoch mean/std/min/max of `key` over several runs' histories.

    histories: one list of per-epoch dicts per run (each with "epoch", 1-based; position
    + 1 when absent). Runs of different lengths are aggregated over the runs that reached
    that epoch; missing or non-finite values are skipped.
    Returns one dict per epoch in increasing order with the AGGREGATE_COLUMNS: epoch, mean,
    std (ddof=1, 0.0 for one run), min, max, n (empty list when there is nothing to aggregate).
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
    return rows


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
    correct, y = correctness_matrix(preds, order)
    return order, y, correct.mean(axis=0)


def correctness_matrix(preds: list[dict], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-run, per-clip correctness over the clips `ids`, in that order.

    preds: one split's {"ids", "y", "probs"} per run (each must hold every clip of `ids`).
    Returns (correct (runs, len(ids)) bool, y (len(ids),) int64). ComparisonError when a run
    lacks a clip or labels disagree between runs.
    """
    rows, y_ref = [], None
    for k, pred in enumerate(preds):
        run_ids, y, probs = _check_prediction(pred, f"run {k + 1}")
        pos = {clip: i for i, clip in enumerate(run_ids)}
        missing = [clip for clip in ids if clip not in pos]
        if missing:
            raise ComparisonError(f"run {k + 1} has no prediction for clip {missing[0]!r} ({len(missing)} missing)")
        idx = np.asarray([pos[clip] for clip in ids], dtype=np.int64)
        y_k = y[idx]
        if y_ref is None:
            y_ref = y_k
        elif not np.array_equal(y_ref, y_k):
            bad = int(np.flatnonzero(y_ref != y_k)[0])
            raise ComparisonError(
                f"clip {ids[bad]!r} has label {int(y_ref[bad])} in run 1 but {int(y_k[bad])} in run {k + 1}"
            )
        rows.append(probs[idx].argmax(axis=1) == y_k)
    if y_ref is None:
        raise ComparisonError("correctness_matrix needs at least one run's predictions")
    return np.stack(rows), y_ref.copy()


def _satterthwaite(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance estimates.

    parts: (variance, its degrees of freedom) pairs, arrays of one shape. Returns
    (sum v)^2 / sum(v^2 / df); inf where every variance is 0.
    """
    total = sum(v for v, _ in parts)
    denom = sum(np.divide(v * v, df, out=np.zeros_like(v * v), where=df > 0) for v, df in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, total * total / np.where(denom > 0, denom, 1.0), np.inf)


def seed_level_test(correct_a: np.ndarray, correct_b: np.ndarray, level: float = 0.95) -> dict[str, np.ndarray]:
    """Two-level (seeds, then clips) t-test of mean accuracy(B) - mean accuracy(A).

    correct_a: (..., k_a, n), correct_b: (..., k_b, n) per-run, per-clip correctness (bool or
    0/1) of two groups of seed repeats on the SAME n clips (same order); k_a + k_b >= 3 and
    n >= 2. Leading dimensions are batch dimensions (the calibration test runs thousands of
    simulated comparisons in one call). The statistic is D = mean over B's runs and clips
    minus the same for A; its variance has two parts (a random-effects decomposition of
    run x clip correctness, as in Bouthillier et al. 2021, "Accounting for variance in
    machine learning benchmarks", MLSys):

    1. seeds: the spread of per-run accuracies, Welch's s_a^2/k_a + s_b^2/k_b when both
       sides have >= 2 runs (Welch's t-test on per-seed scores, as Reimers & Gurevych 2017
       recommend for comparing score distributions), or the pooled variance
       s_p^2 (1/k_a + 1/k_b) with k_a + k_b - 2 df when one side has a single run (assuming
       that run's configuration varies over seeds as the other does). This part already
       holds the per-run clip noise of these clips.
    2. clips: the variance, over the population of clips, of the per-clip paired difference
       d_i = mean_B(c_i) - mean_A(c_i): var_i(d_i)/n minus the per-run noise already counted
       in part 1 (method of moments; never below 0). Pairing makes clip difficulty cancel;
       what is left is how much the two configurations' clip-by-clip skill could differ on
       another sample of clips. It is 0 in expectation when only the seeds differ, so it
       makes the test conservative there.

    The two variances combine with Welch-Satterthwaite degrees of freedom; p is two-sided
    from Student's t and the interval is D +- t_(1+level)/2 * se, so p < 1 - level exactly
    when the interval excludes 0. Few seeds give few degrees of freedom and wide intervals
    (2 v 3: 1 to 3 df, so a difference must exceed 3.2 to 12.7 standard errors): the test
    stays calibrated and says so by its width rather than by claiming a difference.
    Returns arrays of the batch shape: difference, se, df, p_value, ci_low, ci_high,
    accuracy_a, accuracy_b, spread_a, spread_b (ddof=1 std of per-run accuracies; 0 for one
    run), seed_variance, clip_variance.
    """
    from scipy.stats import t as student_t

    ca = np.asarray(correct_a, dtype=np.float64)
    cb = np.asarray(correct_b, dtype=np.float64)
    if ca.ndim < 2 or cb.ndim < 2 or ca.shape[-1] != cb.shape[-1] or ca.shape[:-2] != cb.shape[:-2]:
        raise ComparisonError(f"correct_a and correct_b must be (..., runs, clips) on the same clips: {ca.shape} and {cb.shape}")
    k_a, k_b, n = ca.shape[-2], cb.shape[-2], ca.shape[-1]
    if k_a + k_b < 3 or min(k_a, k_b) < 1:
        raise ComparisonError(f"the seed-level test needs at least 3 runs in all and 1 per side, not {k_a} and {k_b}")
    if n < 2:
        raise ComparisonError(f"the seed-level test needs at least 2 clips, not {n}")
    _check_bootstrap_args(1, level)
    acc_a, acc_b = ca.mean(axis=-1), cb.mean(axis=-1)  # (..., k)
    mean_a, mean_b = acc_a.mean(axis=-1), acc_b.mean(axis=-1)
    diff = mean_b - mean_a
    ss_a = ((acc_a - mean_a[..., None]) ** 2).sum(axis=-1)
    ss_b = ((acc_b - mean_b[..., None]) ** 2).sum(axis=-1)
    zero = np.zeros_like(diff)
    if k_a >= 2 and k_b >= 2:  # Welch
        v_a, v_b = ss_a / (k_a - 1) / k_a, ss_b / (k_b - 1) / k_b
        seed_var = v_a + v_b
        seed_parts = [(v_a, zero + (k_a - 1)), (v_b, zero + (k_b - 1))]
    else:  # one side has a single run: pooled variance
        pooled = (ss_a + ss_b) / (k_a + k_b - 2)
        seed_var = pooled * (1.0 / k_a + 1.0 / k_b)
        seed_parts = [(seed_var, zero + (k_a + k_b - 2))]
    # Per-run clip noise: within-clip variance across runs minus the variance of run accuracies
    # (both hold the seed effect), pooled over the sides with >= 2 runs.
    noise_num, noise_df = zero.copy(), 0
    for c, acc, k in ((ca, acc_a, k_a), (cb, acc_b, k_b)):
        if k >= 2:
            within = c.var(axis=-2, ddof=1).mean(axis=-1)
            between = acc.var(axis=-1, ddof=1)
            noise_num = noise_num + (k - 1) * np.maximum(0.0, within - between) * n / (n - 1)
            noise_df += k - 1
    noise = noise_num / noise_df
    d = cb.mean(axis=-2) - ca.mean(axis=-2)  # (..., n) paired per-clip difference
    clip_var = np.maximum(0.0, d.var(axis=-1, ddof=1) - noise * (1.0 / k_a + 1.0 / k_b)) / n
    var = seed_var + clip_var
    df = _satterthwaite(seed_parts)  # the clip part adds variance but never degrees of freedom
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
    p = np.minimum(1.0, 2.0 * student_t.sf(np.abs(tstat), df))
    half = student_t.ppf(0.5 + level / 2.0, df) * se
    return {
        "difference": diff,
        "se": se,
        "df": df,
        "p_value": p,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "accuracy_a": mean_a,
        "accuracy_b": mean_b,
        "spread_a": np.sqrt(ss_a / (k_a - 1)) if k_a > 1 else zero,
        "spread_b": np.sqrt(ss_b / (k_b - 1)) if k_b > 1 else zero,
        "seed_variance": seed_var,
        "clip_variance": clip_var,
    }


# With this many runs in all (1 v 1, 1 v 2, 1 v 3, 2 v 2) the seed spread rests on <= 2 degrees of
# freedom: only very large differences can come out significant, and the page says so.
TOO_FEW_RUNS = 4
METHOD_MCNEMAR = "McNemar exact test + paired bootstrap (one run per side)"
METHOD_SEEDS = "two-level t-test over seeds and clips (Welch-Satterthwaite)"


def compare_groups(
    preds_a: list[dict],
    preds_b: list[dict],
    split: str = "validation",
    alpha: float = 0.05,
    same_configuration: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Is configuration B better than configuration A? Groups of seed repeats on the same clips.

    preds_a, preds_b: per-run predictions (one split's {"ids", "y", "probs"}, or whole-run
    dicts from which `split` is taken); the clips compared are those every run has.
    - One run per side: McNemar's exact test on the paired per-clip correctness and a paired
      bootstrap interval (`compare_runs`). This is about the two trained models; it cannot
      separate the configuration from seed luck ("scope": "runs").
    - Otherwise: `seed_level_test`, whose unit of replication is the seed ("scope":
      "configurations").
    same_configuration: the two groups share every parameter but the seed (caller knows from
    the store's group keys). Then no difference is ever declared significant: any difference
    is seed noise by construction. The numbers are still reported.
    Returns a JSON-able dict: method, scope, split, n (clips), n_runs_a, n_runs_b,
    accuracy_a, accuracy_b (mean over runs), spread_a, spread_b (std over seeds, ddof=1;
    0 for one run), difference (B - A), ci [low, high] at 95%, p_value, df (None for
    McNemar), alpha, significant, better ("A", "B" or None), same_configuration, mcnemar
    (table dict, one run per side only), too_few_seeds (True when k_a + k_b <= TOO_FEW_RUNS: only
    very large differences can be resolved).
    """
    if not 0.0 < alpha < 1.0:
        raise ComparisonError(f"alpha must be between 0 and 1 (e.g. 0.05), not {alpha}")
    if not preds_a or not preds_b:
        raise ComparisonError(f"each group needs at least one run: got {len(preds_a)} and {len(preds_b)}")
    runs_a = [_split_predictions(p, split, f"run {k + 1} of A") for k, p in enumerate(preds_a)]
    runs_b = [_split_predictions(p, split, f"run {k + 1} of B") for k, p in enumerate(preds_b)]
    k_a, k_b = len(runs_a), len(runs_b)
    out: dict[str, Any] = {"split": split, "n_runs_a": k_a, "n_runs_b": k_b, "alpha": float(alpha),
                           "same_configuration": bool(same_configuration)}
    if k_a == 1 and k_b == 1:
        one = compare_runs(runs_a[0], runs_b[0], split=split, alpha=alpha, n_boot=n_boot, seed=seed)
        diff = one["difference"]
        out.update(method=METHOD_MCNEMAR, scope="runs", n=one["n"], accuracy_a=one["accuracy_a"],
                   accuracy_b=one["accuracy_b"], spread_a=0.0, spread_b=0.0, difference=diff["difference"],
                   ci=[float(diff["ci"][0]), float(diff["ci"][1])], p_value=one["mcnemar"]["p_value"], df=None,
                   mcnemar=one["mcnemar"])
    else:
        ids_a, _, _ = group_correct(runs_a)
        ids_b, _, _ = group_correct(runs_b)
        shared_b = set(ids_b)
        ids = [clip for clip in ids_a if clip in shared_b]
        if len(ids) < 2:
            raise ComparisonError(f"the two groups share {len(ids)} clips; were they trained on the same dataset?")
        ca, y_a = correctness_matrix(runs_a, ids)
        cb, y_b = correctness_matrix(runs_b, ids)
        if not np.array_equal(y_a, y_b):
            bad = int(np.flatnonzero(y_a != y_b)[0])
            raise ComparisonError(f"clip {ids[bad]!r} has label {int(y_a[bad])} in A but {int(y_b[bad])} in B")
        res = {key: float(value) for key, value in seed_level_test(ca, cb).items()}
        out.update(method=METHOD_SEEDS, scope="configurations", n=len(ids), accuracy_a=res["accuracy_a"],
                   accuracy_b=res["accuracy_b"], spread_a=res["spread_a"], spread_b=res["spread_b"],
                   difference=res["difference"], ci=[res["ci_low"], res["ci_high"]], p_value=res["p_value"],
                   df=res["df"] if math.isfinite(res["df"]) else None, mcnemar=None)
    significant = out["p_value"] < alpha and out["difference"] != 0 and not same_configuration
    out["significant"] = bool(significant)
    out["better"] = ("B" if out["difference"] > 0 else "A") if significant else None
    out["too_few_seeds"] = bool(k_a + k_b <= TOO_FEW_RUNS)
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), same order as given.

    p_values: (m,) raw p-values. Adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j))
    for the sorted p_(1) <= ... <= p_(m); rejecting where adjusted p < alpha controls the
    family-wise error rate at alpha under any dependence between the tests.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size and (np.isnan(p).any() or (p < 0).any() or (p > 1).any()):
        raise ComparisonError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def compare_family(
    units: Mapping[str, Sequence[Any]],
    pairs: Sequence[tuple[str, str]],
    load_predictions: Callable[[Any], dict],
    split: str = "validation",
    alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Several comparisons at once, Holm-corrected: one `compare_run_groups` result per pair.

    units: label -> runs (records with .id and .group_key: one run or a seed group);
    pairs: (label_a, label_b) to test (see `against_reference`, `all_pairs`). Each result
    gains "a", "b" (labels), "p_adjusted" (Holm over the pairs that could be tested) and
    "significant" re-decided on the adjusted p (a same-configuration pair never is). A pair
    that cannot be compared gets "error" (the message) and no p.
    """
    results: list[dict[str, Any]] = []
    for label_a, label_b in pairs:
        try:
            res = compare_run_groups(units[label_a], units[label_b], load_predictions, split=split, alpha=alpha)
        except EngineError as exc:
            res = {"error": str(exc)}
        res.update(a=label_a, b=label_b)
        results.append(res)
    tested = [r for r in results if "error" not in r]
    for res, adjusted in zip(tested, holm([r["p_value"] for r in tested])):
        res["p_adjusted"] = float(adjusted)
        res["family_size"] = len(tested)
        res["significant"] = bool(adjusted < alpha and res["difference"] != 0 and not res["same_configuration"])
        res["better"] = ("B" if res["difference"] > 0 else "A") if res["significant"] else None
    return results


def against_reference(labels: Sequence[str], reference: str) -> list[tuple[str, str]]:
    """(reference, other) for every other label: an ablation's rows against its base."""
    return [(reference, label) for label in labels if label != reference]


def all_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of labels, in the given order."""
    return list(itertools.combinations(labels, 2))


# Splits whose stored predictions can be compared: those a run is evaluated on at its end
# (in-collection validation, the cross-collection validations and test).
COMPARABLE_SPLITS = EVAL_SPLITS


def compare_run_groups(
    runs_a: Sequence[Any],
    runs_b: Sequence[Any],
    load_predictions: Callable[[Any], dict],
    split: str = "validation",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """`compare_groups` for stored runs: what the Compare page and `python -m engine compare` call.

    runs_a, runs_b: run records (anything with .id and .group_key); load_predictions(run)
    -> the run's stored {"validation": ..., "test": ...} predictions. The groups must not
    share a run. same_configuration is set when every run of both groups has one group key
    (the configuration without the seed). Adds "runs_a", "runs_b": the run ids of each side.
    """
    ids_a, ids_b = [r.id for r in runs_a], [r.id for r in runs_b]
    shared = sorted(set(ids_a) & set(ids_b))
    if shared:
        raise ComparisonError(f"run {shared[0]!r} is in both groups; a run cannot be compared with itself")
    if split not in COMPARABLE_SPLITS:
        raise ComparisonError(f"split must be one of {', '.join(COMPARABLE_SPLITS)}, not {split!r}")
    keys = {r.group_key for r in [*runs_a, *runs_b]}
    result = compare_groups([load_predictions(r) for r in runs_a], [load_predictions(r) for r in runs_b],
                            split=split, alpha=alpha, same_configuration=len(keys) == 1)
    result["runs_a"], result["runs_b"] = ids_a, ids_b
    return result


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
        if metrics[split].get("n") == 0:
            raise ComparisonError(f"the {split} split has no clips: there is no accuracy to compare")
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
