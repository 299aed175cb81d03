"""What a run stores so that its answers can be trusted on audio it has not heard (issue #24).

At the end of training (`train.final_evaluation`, which every run passes: alone, in a seed
group, in a worker process or on Ray) `fit_trust` turns the selected epoch's raw logits per
evaluation split into two records, kept in the run's metrics (so meta.json, the database's
run record, `show --json` and model bundles all carry them):

- metrics["calibration"]: engine.learn.calibration.calibrate: the temperature fitted on validation
  pooled with the run's cross-collection validation views (CALIBRATION_VIEWS)
  (or None and the reason), ECE and NLL before/after on every evaluation split, reliability
  tables for validation and test;
- metrics["ood"]: the out-of-distribution method (OOD_METHOD, chosen by measurement: see
  docs/TRUST.md), its threshold at 95% of validation clips accepted, and the share of each
  split flagged;
- the OOD reference: what the score measures against at prediction time, from the training
  clips' embeddings (pooled last hidden state): for kNN the embeddings themselves (n_training
  x dim float32: too big for the metrics, so the store keeps them beside the weights,
  `ood_reference.pt`, and bundles carry them).

`trust_of(metrics)` reads them back; a run stored before this change has neither, and the
Predictor then says "uncalibrated" and "no out-of-distribution check".
Numpy only: no torch, no store, no streamlit.
"""

from __future__ import annotations

import numpy as np

from . import calibration, ood
from .metrics import CROSS_VALIDATION_KEYS

OOD_METHOD = "knn_combined"  # engine.learn.ood method key; the measured comparison is in docs/TRUST.md
TRUST_KEYS = ("calibration", "ood")  # what fit_trust adds to a run's metrics (beside the split names)
# The temperature is fitted on validation pooled with every cross-collection validation view the
# run has (held-out recording chain, source, programs): a user's clips come from other
# recordings, and a temperature fitted in-collection alone left those views overconfident
# (docs/TRUST.md, "Which clips fit the temperature": decided on validation views only).
CALIBRATION_VIEWS = ("validation", *CROSS_VALIDATION_KEYS)
RELIABILITY_SPLITS = ("validation", "test")  # splits whose reliability tables are stored (the diagram)
UNCALIBRATED = "uncalibrated: this run was trained before calibration existed"
NO_OOD_CHECK = "no out-of-distribution check for this run (trained before it existed)"
NO_REFERENCE = "no out-of-distribution check: the run's reference statistics (ood_reference.pt) are missing"
VALIDATION_SCORES = "validation_scores"  # ood_reference.pt key: each validation clip's score (keep_validation_scores)
UNLIKE_TRAINING = "This clip is unlike the recordings this model was trained on; treat the answer with caution"


def fit_reference(embeddings: np.ndarray, y: np.ndarray, method: str = OOD_METHOD, statistics: np.ndarray | None = None,
                  validation: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray] | None:
    """What `method` measures against, from the training clips' embeddings (n, dim), labels (n,)
    and input statistics (ood.clip_statistics, (n, 2F)): Mahalanobis {"means" (classes, dim),
    "precision" (dim, dim)}; kNN {"embeddings"}; two-space kNN ood.fit_two_spaces (with the
    validation clips' (embeddings, statistics)); None for the logit scores (they need nothing)."""
    if method == "knn_combined":
        return ood.fit_two_spaces(embeddings, statistics, validation)
    if method == "mahalanobis":
        return ood.fit_class_gaussians(embeddings, y)
    if method == "knn":
        return {"embeddings": np.asarray(embeddings, dtype=np.float32)}
    return None


def fit_trust(splits: dict[str, tuple[np.ndarray, np.ndarray]], embeddings: dict[str, np.ndarray],
              reference: dict[str, np.ndarray] | None, statistics: dict[str, np.ndarray] | None = None) -> dict:
    """{"calibration": ..., "ood": ...} from raw logits: split name -> (logits (n, classes), y (n,)),
    the same splits' embeddings (name -> (n, dim)) and the OOD reference (fit_reference, from
    the training clips). Both are fitted on splits["validation"] only; the other splits are
    only reported, except that the temperature pools validation with the run's cross-collection
    validation views (CALIBRATION_VIEWS); test is never used."""
    record = calibration.calibrate(splits, fit_on=CALIBRATION_VIEWS)
    for name, report in record["splits"].items():
        if name not in RELIABILITY_SPLITS:
            report.pop("reliability_before"), report.pop("reliability_after")
    check = ood_statistics(splits, embeddings, reference, statistics=statistics)
    keep_validation_scores(check, splits, embeddings, reference, statistics)
    return {"calibration": record, "ood": check}


def keep_validation_scores(check: dict, splits: dict[str, tuple[np.ndarray, np.ndarray]], embeddings: dict[str, np.ndarray],
                           reference: dict[str, np.ndarray] | None, statistics: dict[str, np.ndarray] | None) -> None:
    """Store each validation clip's OOD score (n_validation,) float32, in the split's order, in
    `reference` as "validation_scores", when the check is fitted and has a reference: an ensemble
    of seeds (engine.predict.ensemble) fixes its own threshold on the mean of its members' scores."""
    if reference is None or check.get("threshold") is None or "validation" not in splits:
        return
    values = score(check, splits["validation"][0], embeddings["validation"], reference,
                   (statistics or {}).get("validation"))
    reference[VALIDATION_SCORES] = np.asarray(values, dtype=np.float32)


def ood_statistics(splits: dict[str, tuple[np.ndarray, np.ndarray]], embeddings: dict[str, np.ndarray],
                   reference: dict[str, np.ndarray] | None, method: str = OOD_METHOD,
                   statistics: dict[str, np.ndarray] | None = None) -> dict:
    """The OOD check stored with a run: {"key", "method", "accept_rate", "fitted_on", "n_fit",
    "threshold" (None when not fitted), "reason", "flagged": split -> share above threshold}.

    Logit scores use the uncalibrated logits (the threshold is fitted on the same scores, so a
    temperature would only rescale both)."""
    val = splits.get("validation")
    n_fit = 0 if val is None else len(val[1])
    stats = {"key": method, "method": ood.METHODS[method], "accept_rate": ood.ACCEPT_RATE, "fitted_on": "validation",
             "n_fit": n_fit, "threshold": None, "reason": None, "flagged": {}}
    if n_fit < calibration.MIN_CLIPS:
        stats["reason"] = (f"no out-of-distribution check: the validation split has {n_fit} clips, fewer than the "
                           f"{calibration.MIN_CLIPS} needed to fix a threshold")
        return stats
    statistics = statistics or {}
    scores = {name: score(stats, z, embeddings[name], reference, statistics.get(name))
              for name, (z, _) in splits.items() if len(z)}
    if not np.isfinite(scores["validation"]).all():
        stats["reason"] = "no out-of-distribution check: the model's validation outputs are not all finite"
        return stats
    stats["threshold"] = ood.threshold_at(scores["validation"])
    stats["flagged"] = {name: float(ood.unlike_training(values, stats["threshold"]).mean())
                        for name, values in scores.items() if np.isfinite(values).all()}
    return stats


def score(stats: dict, logits: np.ndarray, embeddings: np.ndarray | None = None,
          reference: dict[str, np.ndarray] | None = None, statistics: np.ndarray | None = None) -> np.ndarray:
    """The scores (n,) of the run's OOD method for logits (n, classes), embeddings (n, dim) and
    input statistics (ood.clip_statistics, (n, 2F)) (reference: fit_reference's); higher = more
    unlike training."""
    if stats["key"] == "knn_combined":
        return ood.two_space_score(embeddings, statistics, reference)
    if stats["key"] == "mahalanobis":
        return ood.mahalanobis_score(embeddings, reference)
    if stats["key"] == "knn":
        return ood.knn_score(embeddings, reference["embeddings"])
    return {"max_softmax": ood.max_softmax_score, "energy": ood.energy_score}[stats["key"]](logits)


def usable(stats: dict | None, reference: dict[str, np.ndarray] | None) -> bool:
    """Whether a run's OOD check can score: fitted, and its reference present when it needs one."""
    needs = bool(stats) and stats["key"] in ("mahalanobis", "knn", "knn_combined")
    return bool(stats) and stats.get("threshold") is not None and (reference is not None or not needs)


def window_ood(stats: dict | None, logits: np.ndarray, embeddings: np.ndarray,
               reference: dict[str, np.ndarray] | None,
               statistics: np.ndarray | None = None) -> tuple[list[float | None], list[bool | None]]:
    """Per window of a recording (logits (windows, classes), embeddings (windows, dim), input
    statistics (windows, 2F)): the OOD scores and verdicts of the run's check; Nones when the run
    has no usable check."""
    if not usable(stats, reference):
        return [None] * len(logits), [None] * len(logits)
    scores = score(stats, logits, embeddings, reference, statistics)
    return [float(v) for v in scores], [bool(v) for v in ood.unlike_training(scores, stats["threshold"])]


def ood_verdict(stats: dict | None, reference: dict[str, np.ndarray] | None, window_scores: list[float | None]) -> dict:
    """The OOD answer for one recording from its windows' scores (window_ood's): {"score" (their
    mean), "threshold", "unlike_training", "method"}; all None with a "note" saying why when the
    run has no usable check (trained before it existed: NO_OOD_CHECK; its reference missing:
    NO_REFERENCE)."""
    if not usable(stats, reference):
        note = NO_REFERENCE if stats and stats.get("threshold") is not None else (stats or {}).get("reason")
        return {"score": None, "threshold": None, "unlike_training": None, "method": None, "note": note or NO_OOD_CHECK}
    value = float(np.mean(window_scores))
    return {"score": value, "threshold": stats["threshold"], "unlike_training": bool(value > stats["threshold"]),
            "method": stats["method"]}


def trust_of(metrics: dict | None) -> dict:
    """{"calibration": record or None, "ood": record or None} from a run's stored metrics."""
    metrics = metrics or {}
    return {"calibration": metrics.get("calibration"), "ood": metrics.get("ood")}


def temperature_of(metrics: dict | None) -> float | None:
    """The run's fitted temperature, or None (stored before calibration, or not fitted)."""
    return (trust_of(metrics)["calibration"] or {}).get("temperature")


def calibration_note(metrics: dict | None) -> str:
    """How a run's probabilities are shown, in words (the Predict page, the CLI)."""
    record = trust_of(metrics)["calibration"]
    if record is None:
        return UNCALIBRATED
    if record.get("temperature") is None:
        return record.get("reason") or "not calibrated"
    return f"calibrated: temperature scaling, T = {record['temperature']:.2f} fitted on {fitted_on_words(record)}"


def fitted_on_words(record: dict) -> str:
    """The clips a temperature was fitted on, in words ("validation" for runs of the first
    calibrated version, which stored one name)."""
    names = record.get("fitted_on") or ["validation"]
    names = [names] if isinstance(names, str) else list(names)
    cross = [VIEW_WORDS.get(name, name) for name in names if name != "validation"]
    return "validation" + (f" and its cross-collection views ({', '.join(cross)})" if cross else "")


VIEW_WORDS = {"validation_shift": "recording chain", "validation_source": "source", "validation_program": "programs"}


def trust_lines(metrics: dict | None) -> list[str]:
    """A run's calibration and OOD check in words, one line each (the CLI's `show`)."""
    record, check = trust_of(metrics)["calibration"], trust_of(metrics)["ood"]
    lines = [calibration_note(metrics)]
    if record:
        lines[0] += " (Guo et al. 2017, minimising NLL on those clips)" if record.get("temperature") is not None else ""
        for name, r in record["splits"].items():
            lines.append(f"  {name:<18} ECE {_num(r['ece_before'])} -> {_num(r['ece_after'])}   NLL {_num(r['nll_before'])} "
                         f"-> {_num(r['nll_after'])}   (n={r['n']})")
        lines.append(f"  ({record['ece_method']}; NLL: {record['nll_method']}; before -> after calibration)")
    lines.append(ood_note(check))
    return lines


def ood_note(check: dict | None) -> str:
    """The run's OOD check in one line: method, threshold and the share of each split flagged."""
    if not check:
        return NO_OOD_CHECK
    if check.get("threshold") is None:
        return check.get("reason") or NO_OOD_CHECK
    flagged = ", ".join(f"{name} {share:.0%}" for name, share in check["flagged"].items())
    return (f"out-of-distribution check: {check['method']}; threshold {check['threshold']:.3f} "
            f"({check['accept_rate']:.0%} of validation accepted); flagged: {flagged}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
