"""The seeds of one configuration as one model: a deep ensemble (issue #24).

Lakshminarayanan, Pritzel & Blundell (NeurIPS 2017): independently trained networks of one
configuration, differing only in their random seed, averaged at prediction time, are more
accurate and better calibrated than any one of them, most of all on data unlike the training
data. The runs of a seed group (same configuration, `store.group_key`) are exactly that.

How the answer is made from N member runs, each loaded as a Predictor:
- features are computed once (the members share the feature settings: checked);
- probabilities: pool, then calibrate: the mean of the members' plain softmax probabilities,
  then one temperature for the ensemble, softmax(log(mean p) / T), with T fitted as a run's is
  (minimum NLL on validation pooled with the cross-collection validation views,
  trust.CALIBRATION_VIEWS; never test) on the members' stored predictions of those clips. Chosen on
  validation views alone, one view left out at a time, over averaging the members' own calibrated
  probabilities: NLL tied, ECE lower on 3 of 4 views (docs/TRUST.md, "Deep ensembles"). Without
  stored predictions (members from bundles), or with too few clips, the ensemble averages the
  members' calibrated probabilities and says so;
- out-of-distribution: a window's score is the mean of the members' scores; the threshold accepts
  95% of the validation clips by that same mean score, from each member's stored validation scores
  (`EnsemblePredictor.ood_threshold`). Members stored before those scores were kept fall back to
  the mean of the members' thresholds, which flags fewer validation clips (averaging lowers the
  score's spread), and say so. Members whose check differs (another method) or is missing make the
  ensemble say it has no check, with the reason.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..core.errors import StoreError
from ..learn.calibration import MIN_CLIPS, fit_temperature, logits_from_probs, scaled_probs
from ..learn.ood import ACCEPT_RATE, clip_statistics, threshold_at, unlike_training
from ..learn.trust import (CALIBRATION_VIEWS, NO_OOD_CHECK, VALIDATION_SCORES, fitted_on_words, temperature_of,
                           trust_of, usable, window_ood)
from .predictor import Predictor, WindowAnswers, WindowClassifier

METHOD = ("deep ensemble (Lakshminarayanan et al. 2017): the mean of the seeds' probabilities, calibrated together "
          "by one temperature fitted on validation")


def ensemble_temperature(member_predictions: Sequence[dict] | None) -> tuple[float | None, list[str], str | None]:
    """(T, the views it was fitted on, why not) for the ensemble of runs whose stored predictions
    (split -> {"ids", "y", "probs": plain softmax, (n, classes)}) are given: fitted on log of the mean
    probabilities, pooled over the calibration views every member has with the same clips."""
    if not member_predictions:
        return None, [], "no stored predictions to fit one temperature for the ensemble"
    first = member_predictions[0]
    views = [v for v in CALIBRATION_VIEWS
             if all(v in p and p[v].get("ids") == first[v].get("ids") for p in member_predictions)]
    if "validation" not in views or len(first["validation"]["y"]) < MIN_CLIPS:
        return None, [], (f"fewer than {MIN_CLIPS} validation clips common to every seed: "
                          "no temperature for the ensemble")
    logits = [logits_from_probs(np.mean([np.asarray(p[v]["probs"], dtype=np.float64) for p in member_predictions], axis=0))
              for v in views]
    labels = [np.asarray(first[v]["y"], dtype=np.int64) for v in views]
    if not all(np.isfinite(z).all() for z in logits):
        return None, [], "the seeds' stored probabilities are not all finite: no temperature for the ensemble"
    return fit_temperature(np.concatenate(logits), np.concatenate(labels)), views, None


def seed_group(store: Any, run_id: str) -> list[str]:
    """The finished runs of `run_id`'s seed group (its configuration with any seed), `run_id` first,
    the others by seed; [run_id] when it has no finished sibling. A sibling whose calibration and
    OOD check are not of the same kind as the run's (one trained before they existed, say) is left
    out, so that the ensemble never mixes calibrated with plain probabilities or loses the check."""
    record = store.get(run_id)
    siblings = [r for r in store.list_runs(status="finished")
                if r.group_key == record.group_key and r.id != run_id and trust_kind(r.metrics) == trust_kind(record.metrics)]
    return [run_id, *[r.id for r in sorted(siblings, key=lambda r: (r.config.train.seed, r.id))]]


def trust_kind(metrics: dict | None) -> tuple[bool, str | None]:
    """(has a fitted temperature, the OOD method key when a threshold is fitted) of a run's metrics."""
    check = trust_of(metrics)["ood"] or {}
    return temperature_of(metrics) is not None, check.get("key") if check.get("threshold") is not None else None


class EnsemblePredictor(WindowClassifier):
    """Several runs of one configuration (their seeds) classifying as one model; see the module."""

    def __init__(self, members: Sequence[Predictor], member_predictions: Sequence[dict] | None = None) -> None:
        """`member_predictions`: each member's stored predictions (store.load_predictions: split ->
        {"ids", "y", "probs"}), to fit the ensemble's own temperature; None: average calibrated members."""
        if len(members) < 2:
            raise StoreError("an ensemble needs at least two finished runs of one configuration")
        first = members[0]
        for other in members[1:]:
            if list(other.class_names) != list(first.class_names):
                raise StoreError(f"runs {first.run_id} and {other.run_id} name other classes "
                                 f"({len(first.class_names)} vs {len(other.class_names)}): they cannot be averaged")
            if other.config.features != first.config.features:
                raise StoreError(f"runs {first.run_id} and {other.run_id} use other feature settings: "
                                 "an ensemble averages runs of one configuration")
        self.members = list(members)
        self.config = first.config
        self.class_names = list(first.class_names)
        self.run_id = first.run_id
        self.run_ids = [m.run_id for m in self.members]
        self.temperature, self.fitted_on, why = ensemble_temperature(member_predictions)
        self.calibration = self._calibration_words(why)

    @classmethod
    def from_store(cls, store: Any, run_ids: Sequence[str]) -> "EnsemblePredictor":
        """The ensemble of stored runs `run_ids` (each loaded with Predictor.from_store), its
        temperature fitted on their stored validation predictions."""
        members = [Predictor.from_store(store, run_id) for run_id in run_ids]
        try:
            predictions = [store.load_predictions(run_id) for run_id in run_ids]
        except StoreError:
            predictions = None  # said in the calibration words: the members' own temperatures are averaged
        return cls(members, predictions)

    def _calibration_words(self, why_not: str | None) -> str:
        size = len(self.members)
        if self.temperature is not None:
            return (f"mean of {size} seeds' probabilities (deep ensemble), calibrated together: temperature scaling, "
                    f"T = {self.temperature:.2f} fitted on {fitted_on_words({'fitted_on': self.fitted_on})}")
        fitted = [m.temperature for m in self.members if m.temperature]
        each = (f"each seed's own temperature (T = {', '.join(f'{t:.2f}' for t in fitted)})"
                if len(fitted) == size else f"{len(fitted)} of {size} seeds calibrated")
        return f"mean of {size} seeds' calibrated probabilities (deep ensemble; {each}; {why_not})"

    def ensemble_probabilities(self, member_logits: Sequence[np.ndarray]) -> np.ndarray:
        """The ensemble's probabilities (n, classes) from each member's raw logits (n, classes):
        softmax(log(mean of the plain softmaxes) / T) with the ensemble's T, else the mean of the
        members' calibrated probabilities (see the module)."""
        if self.temperature is None:
            return np.mean([m.probabilities(z) for m, z in zip(self.members, member_logits)], axis=0)
        plain = np.mean([m.probabilities(z, calibrated=False) for m, z in zip(self.members, member_logits)], axis=0)
        return scaled_probs(logits_from_probs(plain), self.temperature).astype(np.float32)

    def window_answers(self, feats: np.ndarray) -> WindowAnswers:
        """The ensemble's probabilities (windows, classes) for features (windows, frames, features)
        (ensemble_probabilities); each window's mean OOD score and verdict; the recording's verdict;
        and each member's own answer (its probabilities averaged over the windows)."""
        statistics = clip_statistics(feats)  # (windows, 2F), shared: the members' features are the same
        reason = self._no_check_reason()  # None: every member's check scores, and they are averaged
        logits, scores = [], []
        for member in self.members:
            z, embeddings = member.logits_features(feats)  # (windows, classes), (windows, dim)
            logits.append(z)
            if reason is None:
                scores.append(window_ood(member.trust["ood"], z, embeddings, member.ood_reference, statistics)[0])
        mean_probs = self.ensemble_probabilities(logits)  # (windows, classes)
        record = self._record([m.probabilities(z).mean(axis=0) for m, z in zip(self.members, logits)],
                              mean_probs.mean(axis=0))
        if reason is not None:
            nothing: list[Any] = [None] * len(feats)
            verdict = {"score": None, "threshold": None, "unlike_training": None, "method": None, "note": reason}
            return WindowAnswers(mean_probs, nothing, list(nothing), verdict, record)
        window_scores = np.mean(np.asarray(scores, dtype=np.float64), axis=0)  # (windows,)
        threshold, fixed_how = self.ood_threshold()
        value = float(window_scores.mean())
        verdict = {"score": value, "threshold": threshold, "unlike_training": bool(value > threshold),
                   "method": f"{self.members[0].trust['ood']['method']}; the mean over {len(self.members)} seeds' "
                             f"scores; {fixed_how}"}
        flags = [bool(v) for v in unlike_training(window_scores, threshold)]
        return WindowAnswers(mean_probs, [float(v) for v in window_scores], flags, verdict, record)

    def ood_threshold(self) -> tuple[float, str]:
        """(threshold, how it was fixed) of the ensemble's mean OOD score: the ACCEPT_RATE quantile
        of the members' mean score over the validation clips, when every member stored its
        validation clips' scores (trust.VALIDATION_SCORES, one clip order); else the mean of the
        members' thresholds (runs stored before the scores were kept), which flags fewer
        validation clips than ACCEPT_RATE implies, because the mean score varies less."""
        kept = [(m.ood_reference or {}).get(VALIDATION_SCORES) for m in self.members]
        if all(v is not None for v in kept) and len({len(v) for v in kept}) == 1 and len(kept[0]):
            mean = np.mean(np.asarray(kept, dtype=np.float64), axis=0)  # (n_validation,)
            return threshold_at(mean), f"threshold at {ACCEPT_RATE:.0%} of validation clips accepted by that mean"
        threshold = float(np.mean([m.trust["ood"]["threshold"] for m in self.members]))
        return threshold, "threshold the mean of the seeds' thresholds (runs stored before their validation scores were kept)"

    def _record(self, member_probs: list[np.ndarray], overall: np.ndarray) -> dict[str, Any]:
        """{"method", "members": [{"run_id", "seed", "label", "probability"}], "agree": how many
        members' own answers match the ensemble's} from each member's (classes,) and the mean's."""
        label = int(np.argmax(overall))
        members = [{"run_id": m.run_id, "seed": m.config.train.seed, "label": self.class_names[int(np.argmax(p))],
                    "probability": float(np.max(p))} for m, p in zip(self.members, member_probs)]
        return {"method": METHOD, "members": members,
                "agree": sum(int(np.argmax(p)) == label for p in member_probs)}

    def _no_check_reason(self) -> str | None:
        """Why the members' OOD checks cannot be averaged, or None when they can."""
        checks = [m.trust["ood"] for m in self.members]
        if not all(usable(c, m.ood_reference) for c, m in zip(checks, self.members)):
            return f"{NO_OOD_CHECK.split(' (')[0]}: not every run of the ensemble has a usable check"
        if len({c["key"] for c in checks}) > 1:
            return "no out-of-distribution check: the runs of the ensemble use different methods"
        return None
