"""Classification metrics from labels and predicted probabilities, in plain numpy.

Medley-solos-DB is imbalanced (piano + violin are 76% of training, flute 26% of test), so
overall accuracy and balanced accuracy (mean per-class recall) are both reported.
"""

from __future__ import annotations

import numpy as np

from ..core.labels import NUM_CLASSES

# cross-collection validation split -> its per-epoch history key
CROSS_VALIDATION_KEYS = {"validation_shift": "val_shift_accuracy", "validation_source": "val_source_accuracy",
                         "validation_program": "val_program_accuracy"}
EPOCH_SPLITS = ("validation", *CROSS_VALIDATION_KEYS)  # evaluated after every epoch, when present
EVAL_SPLITS = (*EPOCH_SPLITS, "test")  # evaluated at the end, when present


def lacks_program_view(metrics: dict) -> bool:
    """True for a run's stored metrics (split -> {...}) evaluated on the cross-collection views
    but not on the program view: its dataset has none (the real Medley-solos-DB), so the
    protocol chooses on the source view (engine.compare.ablation.protocol_split)."""
    return not metrics.get("validation_program") and bool(metrics.get("validation_source"))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts (num_classes, num_classes): rows = actual class, columns = predicted class."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate(y_true: np.ndarray, probs: np.ndarray, num_classes: int | None = None) -> dict:
    """Metrics of the argmax prediction of `probs` (n, num_classes) against `y_true` (n,).

    Returns a JSON-able dict: n, accuracy, balanced_accuracy (mean recall over the classes
    present in y_true), macro_f1 (mean F1 over classes present in y_true or predicted, as
    scikit-learn computes it), per_class_accuracy (recall per class, None where the class is
    absent), confusion (rows actual, columns predicted, counts). Rates are in [0, 1]; all
    are None when n == 0. `num_classes`: default the width of `probs` (NUM_CLASSES when it has
    no rows and no width).
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs)
    if num_classes is None:
        num_classes = int(probs.shape[-1]) if probs.ndim == 2 and probs.shape[-1] else NUM_CLASSES
    probs = probs.reshape(len(y_true), num_classes)
    y_pred = probs.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp, actual, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(actual > 0, tp / actual, np.nan)  # (classes,)
        f1 = np.where(actual + predicted > 0, 2 * tp / (actual + predicted), np.nan)  # 2tp / (2tp+fp+fn)
    n = int(len(y_true))
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else None,
        "balanced_accuracy": float(np.nanmean(recall)) if n else None,
        "macro_f1": float(np.nanmean(f1)) if n else None,
        "per_class_accuracy": [None if np.isnan(r) else float(r) for r in recall],
        "confusion": cm.tolist(),
    }
