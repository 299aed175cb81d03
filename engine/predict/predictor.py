"""Prediction with a stored run: audio -> instrument probabilities.

A recording is cut into 3-second windows (the length the models were trained on), each
window becomes features exactly as in training (`clip_features`, then the run's
standardizer), and the overall answer is the mean of the windows' probabilities.

Probabilities are calibrated by default (issue #24, engine.learn.trust): softmax(logits / T) with
the temperature the run fitted on its validation split; each answer says so (`calibration`)
and carries an out-of-distribution verdict (`ood`, per window too). A run stored before
these existed predicts with the plain softmax and says "uncalibrated" and that it has no
out-of-distribution check.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..data.audio import AudioSource, fit_to_length, is_silent, load_audio, window_starts
from ..core.config import RunConfig
from ..core.errors import AudioError, StoreError
from ..core.labels import CLASS_NAMES, class_names_of
from ..learn.model import autocast, build_model
from ..learn.ood import captured_embeddings, clip_statistics
from ..learn.trust import UNLIKE_TRAINING, calibration_note, ood_verdict, temperature_of, trust_of, window_ood

BATCH = 1024  # windows per forward pass
MIN_SECONDS = 0.25  # shorter audio has too few frames to classify
MAX_PEAK = 1000.0  # samples beyond this (60 dB over full scale) are not audio at a usable level


@dataclass
class WindowPrediction:
    """One window: where it starts and how long it is (seconds), and its probabilities (classes,)."""

    start: float
    duration: float
    probabilities: list[float]
    ood_score: float | None = None  # the run's OOD score of this window (engine.learn.trust); None: no check
    unlike_training: bool | None = None  # score above the run's threshold; None: no check


@dataclass
class Prediction:
    """The answer for one recording.

    label: most probable class name; probabilities: class name -> mean window probability
    (sums to 1); windows: one entry per 3-second window; duration: seconds of audio;
    silent: the recording is (nearly) silent (predict_samples refuses those; kept for callers
    that build a Prediction themselves); warnings: what makes the answer less certain (e.g.
    padded with silence, unlike the training data), for people and for the CLI's JSON;
    calibration: how the probabilities were made, in words (calibrated with T, or why not);
    ood: {"score", "threshold", "unlike_training", "method"} (engine.learn.trust.ood_verdict; all
    None with a "note" for a run trained before the check existed); ensemble: for the seeds of a
    configuration averaged (engine.predict.ensemble), {"method", "members", "agree"}, else None.
    """

    label: str
    probabilities: dict[str, float]
    windows: list[WindowPrediction] = field(default_factory=list)
    duration: float = 0.0
    silent: bool = False
    warnings: list[str] = field(default_factory=list)
    calibration: str = ""
    ood: dict[str, Any] | None = None
    ensemble: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def check_signal(y: np.ndarray, sample_rate: int, clip_samples: int) -> list[str]:
    """Warnings about mono `y` as classifier input; AudioError when it has no usable signal:
    shorter than MIN_SECONDS, silent (peak below -80 dBFS), or samples beyond MAX_PEAK."""
    seconds = len(y) / sample_rate
    if seconds < MIN_SECONDS:
        raise AudioError(f"only {seconds:.2f} s of audio; at least {MIN_SECONDS} s is needed to classify")
    if is_silent(y):
        raise AudioError("silent (peak level below -80 dBFS): there is nothing to classify")
    peak = float(np.max(np.abs(y)))
    if peak > MAX_PEAK:
        raise AudioError(f"samples reach {peak:.3g}, far beyond full scale (1.0): not audio at a usable level")
    warnings = []
    if len(y) < 0.97 * clip_samples:
        warnings.append(f"{seconds:.2f} s is shorter than a training clip ({clip_samples / sample_rate:.2f} s): "
                        "padded with silence, so the answer is less certain")
    return warnings


@dataclass
class WindowAnswers:
    """What a model says about a recording's windows: probabilities (windows, classes), each
    window's OOD score and verdict (Nones without a check), the recording's OOD verdict
    (engine.learn.trust.ood_verdict's dict), and for an ensemble what its members said."""

    probs: np.ndarray
    scores: list[float | None]
    flags: list[bool | None]
    ood: dict[str, Any]
    ensemble: dict[str, Any] | None = None


class WindowClassifier:
    """What turns audio into a Prediction, window by window: a single run (Predictor) or the seeds
    of one configuration averaged (engine.predict.ensemble.EnsemblePredictor).

    A subclass sets `config` (RunConfig: the feature settings), `class_names` (output order),
    `calibration` (how its probabilities are made, in words) and implements `window_answers`."""

    config: RunConfig
    class_names: list[str]
    calibration: str

    def window_answers(self, feats: np.ndarray) -> WindowAnswers:
        """What the model says about features (windows, frames, features)."""
        raise NotImplementedError

    def window_features(self, y: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """Features (windows, frames, features) of mono `y` at the model's rate, and window starts (s)."""
        from ..features.extract import clip_features

        fc = self.config.features
        y = np.asarray(y, dtype=np.float32)
        starts = window_starts(len(y), fc.clip_samples)  # one window at a time: no (windows, samples) copy
        feats = np.stack([clip_features(fit_to_length(y[s:s + fc.clip_samples], fc.clip_samples), fc)
                          for s in starts]).astype(np.float32)
        return feats, [s / fc.sample_rate for s in starts]

    def predict_samples(self, y: np.ndarray) -> Prediction:
        """Classify mono samples `y` (samples,) at config.features.sample_rate (22,050 Hz).

        AudioError when there is no usable signal (check_signal): silence, under MIN_SECONDS,
        absurd amplitudes, or a model output that is not finite. Never a made-up label."""
        fc = self.config.features
        warnings = check_signal(y, fc.sample_rate, fc.clip_samples)
        feats, starts = self.window_features(y)
        if len(feats) == 0:
            raise AudioError("no clips to classify: the audio gives no 3-second window")
        answers = self.window_answers(feats)
        probs = answers.probs  # (windows, classes), calibrated when the model has a temperature
        if not np.isfinite(probs).all():
            raise AudioError("the model gives no finite answer for this audio (are its samples scaled as audio?)")
        overall = probs.mean(axis=0)
        overall = overall / overall.sum()
        window_len = fc.clip_samples / fc.sample_rate
        total = len(y) / fc.sample_rate
        windows = [WindowPrediction(start, min(window_len, max(total - start, 0.0)), [float(p) for p in row], score, flag)
                   for start, row, score, flag in zip(starts, probs, answers.scores, answers.flags)]
        if answers.ood["unlike_training"]:
            warnings.append(UNLIKE_TRAINING)
        return Prediction(
            label=self.class_names[int(overall.argmax())],
            probabilities={name: float(p) for name, p in zip(self.class_names, overall)},
            windows=windows, duration=total, silent=is_silent(y), warnings=warnings,
            calibration=self.calibration, ood=answers.ood, ensemble=answers.ensemble,
        )

    def predict_file(self, source: AudioSource) -> Prediction:
        """Classify a file path, bytes or binary file (decoded with engine.data.audio.load_audio)."""
        features = self.config.features
        return self.predict_samples(load_audio(source, sr=features.sample_rate, resampler=features.resampler))

    def predict_files(self, files: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
        """One dict per file: {"file", "label", "probabilities", "calibration", "ood", "warnings"}
        (and "ensemble" for an ensemble) or {"file", "error"}; a bad file does not stop the others."""
        results: list[dict[str, Any]] = []
        for path in files:
            try:
                pred = self.predict_file(Path(path))
            except Exception as exc:  # any unreadable file is reported, the rest go on
                results.append({"file": str(path), "error": str(exc)})
            else:
                result = {"file": str(path), "label": pred.label, "probabilities": pred.probabilities,
                          "calibration": pred.calibration, "ood": pred.ood, "warnings": pred.warnings}
                if pred.ensemble is not None:
                    result["ensemble"] = pred.ensemble
                results.append(result)
        return results


class Predictor(WindowClassifier):
    """A trained model from the store, ready to classify audio (CPU, eval mode)."""

    def __init__(self, config: RunConfig, state_dict: dict, standardizer: dict | None = None,
                 class_names: Iterable[str] = CLASS_NAMES, run_id: str | None = None,
                 metrics: dict | None = None, ood_reference: dict | None = None) -> None:
        self.config = config
        self.run_id = run_id
        self.trust = trust_of(metrics)  # issue #24: the run's calibration and OOD records (None: trained before)
        self.temperature = temperature_of(metrics)  # None: probabilities are the plain softmax
        self.calibration = calibration_note(metrics)
        self.ood_reference = ood_reference  # what the OOD score measures against (engine.learn.trust.fit_reference)
        self.class_names = list(class_names)
        self.model = build_model(config.model, config.features, num_classes=len(self.class_names))
        self.model.load_state_dict(state_dict)
        self.model.eval()
        self.mean, self.std = None, None
        if standardizer:
            self.mean = np.asarray(standardizer["mean"], dtype=np.float32)  # (features,)
            self.std = np.asarray(standardizer["std"], dtype=np.float32)  # (features,)

    @classmethod
    def from_store(cls, store: Any, run_id: str) -> "Predictor":
        """Load meta.json and model.pt of `run_id`; StoreError when it has no saved model."""
        meta = store.load_meta(run_id)
        state = store.load_state_dict(run_id)
        try:
            config = RunConfig.from_dict(meta["config"])
            return cls(config, state, meta.get("standardizer"), class_names_of(meta), run_id,
                       store.get(run_id).metrics, store.load_ood_reference(run_id))  # its calibration and OOD check
        except (KeyError, RuntimeError) as exc:
            raise StoreError(f"run '{run_id}': the stored model does not match its configuration: {exc}") from exc

    def predict_features(self, x: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Probabilities (n, classes) float32 for unscaled features x (n, frames, features):
        softmax(logits / T) with the run's temperature (when it has one and `calibrated`)."""
        return self.probabilities(self.logits_features(x)[0], calibrated)

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """softmax(logits / T) (n, classes) float32 for logits (n, classes); T = 1 when the run has
        no temperature or not `calibrated`."""
        scale = self.temperature if calibrated and self.temperature else 1.0
        return torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)) / scale, dim=1).numpy()

    @torch.inference_mode()
    def logits_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits (n, classes) and embeddings (n, dim) float32 (the pooled last hidden state,
        engine.learn.ood.captured_embeddings) for unscaled features x (n, frames, features)."""
        x = np.asarray(x, dtype=np.float32)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        tensor = torch.from_numpy(np.ascontiguousarray(x))
        if len(tensor) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
        with autocast("cpu", self.config.train.precision), captured_embeddings(self.model) as parts:  # as in training
            logits = torch.cat([self.model(tensor[i:i + BATCH]).float() for i in range(0, len(tensor), BATCH)])
        return logits.numpy(), torch.cat(parts).numpy()

    def window_answers(self, feats: np.ndarray) -> WindowAnswers:
        """Calibrated probabilities (windows, classes) for features (windows, frames, features), the
        windows' OOD scores and verdicts, and the recording's verdict (the mean of the window scores)."""
        logits, embeddings = self.logits_features(feats)  # (windows, classes), (windows, dim)
        statistics = clip_statistics(feats)  # (windows, 2F): what the two-space check also measures
        scores, flags = window_ood(self.trust["ood"], logits, embeddings, self.ood_reference, statistics)  # issue #24
        return WindowAnswers(self.probabilities(logits), scores, flags,
                             ood_verdict(self.trust["ood"], self.ood_reference, scores))
