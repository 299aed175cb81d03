"""Calibrated probabilities: temperature scaling and how well probabilities match accuracy.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one
scalar T > 0 divides a model's logits before the softmax, p = softmax(z / T). T is fitted on
the run's **validation** split by minimising the negative log-likelihood (NLL, nats per clip)
over log T (bounded search, so T stays positive); the test split is never used to fit. T does
not change the argmax, so accuracy is unchanged; T > 1 softens over-confident answers.

Expected calibration error (ECE, Naeini et al. 2015; as Guo et al. report it): top-label,
15 equal-width confidence bins on [0, 1]; the clip-weighted mean over bins of
|accuracy - mean confidence|. A bin holds confidences in (low, high] (the first also 0).

Plain numpy + scipy: no torch, no store, no streamlit.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ECE_BINS = 15
MIN_CLIPS = 20  # fewer validation clips than this: no temperature is fitted (too few to estimate one)
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))  # search range of log T
METHOD = "temperature scaling (Guo et al. 2017): one T > 0 minimising the NLL of the validation clips it is fitted on"
ECE_METHOD = f"top-label ECE, {ECE_BINS} equal-width bins"
NLL_METHOD = "mean negative log-likelihood (nats per clip)"
PROB_FLOOR = 1e-12  # probabilities are clipped here before a log


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """log p (n, classes): logits up to a per-row constant, which softmax(z / T) ignores.
    For stored probabilities when the raw logits are gone (rounded: use raw logits if you have them)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, None))


def scaled_probs(logits: np.ndarray, temperature: float | None) -> np.ndarray:
    """softmax(logits / T) (n, classes) float64; T None or 1: the plain softmax."""
    z = np.asarray(logits, dtype=np.float64)
    return softmax(z / (temperature or 1.0), axis=1)


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray, temperature: float | None = None) -> float | None:
    """Mean NLL (nats per clip) of labels y (n,) under softmax(logits / T); None when n == 0."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return None
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / (temperature or 1.0), axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Top-label ECE of probabilities (n, classes) against labels (n,), `bins` equal-width bins;
    in [0, 1]; None when n == 0."""
    table = reliability_table(probs, y, bins)
    n = sum(row["count"] for row in table)
    if n == 0:
        return None
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"]) / n)


def reliability_table(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """One row per equal-width confidence bin: {"low", "high", "count", "confidence" (mean top
    probability), "accuracy" (share of top labels right)}; confidence/accuracy None when empty."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    confidence = probs.max(axis=1) if len(y) else np.zeros(0)
    correct = (probs.argmax(axis=1) == y) if len(y) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (low, high] -> bin
    rows = []
    for b in range(bins):
        hit = which == b
        count = int(hit.sum())
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "confidence": float(confidence[hit].mean()) if count else None,
                     "accuracy": float(correct[hit].mean()) if count else None})
    return rows


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the mean NLL of y (n,) under softmax(logits (n, classes) / T),
    searched over log T in LOG_T_BOUNDS (bounded Brent)."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.int64)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(z, y, math.exp(log_t)),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def split_report(logits: np.ndarray, y: np.ndarray, temperature: float | None) -> dict:
    """ECE and NLL of one split before and after scaling by T (after = before without T), with
    the reliability tables for the diagram: {"n", "ece_before", "ece_after", "nll_before",
    "nll_after", "reliability_before", "reliability_after"}."""
    before, after = scaled_probs(logits, None), scaled_probs(logits, temperature)
    return {"n": int(len(y)),
            "ece_before": expected_calibration_error(before, y), "ece_after": expected_calibration_error(after, y),
            "nll_before": negative_log_likelihood(logits, y), "nll_after": negative_log_likelihood(logits, y, temperature),
            "reliability_before": reliability_table(before, y), "reliability_after": reliability_table(after, y)}


def calibrate(splits: dict[str, tuple[np.ndarray, np.ndarray]], fit_on: Sequence[str] = ("validation",)) -> dict:
    """Fit T on the clips of the splits named in fit_on, pooled (those present; the first must
    have MIN_CLIPS clips), and report every split. `splits`: name -> (logits (n, classes), y (n,)).

    Returns the JSON-able record stored with a run: {"method", "ece_method", "nll_method",
    "fitted_on" (the names pooled), "n_fit", "temperature" (None when not fitted), "reason"
    (why not, else None), "splits": name -> split_report}."""
    first = fit_on[0]
    n_first = len(splits[first][1]) if first in splits else 0
    pooled = [name for name in fit_on if name in splits and len(splits[name][1])]
    temperature, reason = None, None
    if n_first < MIN_CLIPS:
        reason = (f"not calibrated: the {first} split has {n_first} clips, fewer than the {MIN_CLIPS} "
                  f"needed to fit a temperature")
    elif not all(np.isfinite(splits[name][0]).all() for name in pooled):
        reason = f"not calibrated: the model's outputs on {', '.join(pooled)} are not all finite"
    else:
        temperature = fit_temperature(np.concatenate([splits[name][0] for name in pooled]),
                                      np.concatenate([splits[name][1] for name in pooled]))
    n_fit = sum(len(splits[name][1]) for name in pooled) if temperature is not None else n_first
    return {"method": METHOD, "ece_method": ECE_METHOD, "nll_method": NLL_METHOD,
            "fitted_on": pooled if temperature is not None else [first],
            "n_fit": n_fit, "temperature": temperature, "reason": reason,
            "splits": {name: split_report(z, y, temperature) for name, (z, y) in splits.items()
                       if len(y) and np.isfinite(z).all()}}  # a split with non-finite outputs has no report
