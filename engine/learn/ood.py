"""Out-of-distribution scores: is a clip unlike the recordings a model was trained on?

Every score is "higher = more unlike the training data"; a clip is flagged when its score is
above a threshold fixed on the run's own validation split so that ACCEPT_RATE (95%) of the
validation clips are accepted (the 95th percentile of their scores).

Scores compared (docs/TRUST.md has the measurements and the choice):
- max-softmax: -max_c softmax(z)_c (Hendrycks & Gimpel, ICLR 2017);
- energy: -logsumexp_c z_c (Liu et al., NeurIPS 2020);
- Mahalanobis: min over classes of the squared Mahalanobis distance of the model's pooled last
  hidden state (the input of its linear head) to the class means of the training clips, with
  one shared covariance (Lee et al., NeurIPS 2018; without their input perturbation);
- k-NN: distance to the k-th nearest training clip of the L2-normalised embedding (Sun et al.,
  ICML 2022);
- k-NN, two spaces: the same distance in the embedding and in the clip's input statistics (the
  mean and standard deviation of each feature over its frames, standardised on training), each
  turned into its percentile among the validation clips' distances, and the larger of the two
  kept. The embedding alone misses what the network maps near a class although it sounds like
  no training clip (noise, a sine, another microphone); the input statistics alone miss what
  only the network tells apart.

Scores are numpy maths; `captured_embeddings` collects a torch model's embeddings while it runs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from scipy.special import logsumexp, softmax

ACCEPT_RATE = 0.95  # share of validation clips the threshold accepts
KNN_K = 10
KNN_CHUNK = 1024  # query rows per distance block
COVARIANCE_RIDGE = 1e-3  # added to the shared covariance's diagonal, times its mean variance
METHODS = {
    "max_softmax": "max-softmax probability (Hendrycks & Gimpel 2017)",
    "energy": "energy score, -logsumexp of logits (Liu et al. 2020)",
    "mahalanobis": "Mahalanobis distance to class means, shared covariance, pooled hidden state (Lee et al. 2018)",
    "knn": f"distance to the {KNN_K}th nearest training clip, normalised pooled hidden state (Sun et al. 2022)",
    "knn_combined": (f"distance to the {KNN_K}th nearest training clip in two spaces, the normalised pooled hidden "
                     "state (Sun et al. 2022) and the clip's feature statistics, each as its percentile among "
                     "validation clips; the larger counts"),
}


def max_softmax_score(logits: np.ndarray) -> np.ndarray:
    """-max softmax probability (n,) of logits (n, classes): in [-1, -1/classes]."""
    return -softmax(np.asarray(logits, dtype=np.float64), axis=1).max(axis=1)


def energy_score(logits: np.ndarray) -> np.ndarray:
    """Energy -logsumexp(z) (n,) of logits (n, classes), in logit units."""
    return -logsumexp(np.asarray(logits, dtype=np.float64), axis=1)


def fit_class_gaussians(embeddings: np.ndarray, y: np.ndarray) -> dict:
    """Class means (classes present, dim) and the inverse of the shared (tied) covariance
    (dim, dim) of training embeddings (n, dim) with labels (n,): {"means", "precision"}."""
    e, y = np.asarray(embeddings, dtype=np.float64), np.asarray(y, dtype=np.int64)
    classes = np.unique(y)
    means = np.stack([e[y == c].mean(axis=0) for c in classes])  # (classes, dim)
    centred = e - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / max(len(e), 1)  # (dim, dim)
    cov += COVARIANCE_RIDGE * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
    return {"means": means, "precision": np.linalg.inv(cov)}


def mahalanobis_score(embeddings: np.ndarray, gaussians: dict) -> np.ndarray:
    """min over classes of (e - mu_c)^T P (e - mu_c) (n,), squared Mahalanobis distance."""
    e = np.asarray(embeddings, dtype=np.float64)
    diffs = e[:, None, :] - gaussians["means"][None]  # (n, classes, dim)
    return np.einsum("ncd,de,nce->nc", diffs, gaussians["precision"], diffs).min(axis=1)


def knn_score(embeddings: np.ndarray, reference: np.ndarray, k: int = KNN_K) -> np.ndarray:
    """Euclidean distance (n,) of each L2-normalised embedding to its k-th nearest L2-normalised
    reference (training) embedding (m, dim)."""
    a, b = _unit(embeddings), _unit(reference)
    k = min(k, len(b))
    out = np.empty(len(a))
    for start in range(0, len(a), KNN_CHUNK):  # (chunk, m) distances at a time: bounded memory
        dist = np.sqrt(np.clip(2.0 - 2.0 * a[start:start + KNN_CHUNK] @ b.T, 0.0, None))
        out[start:start + KNN_CHUNK] = np.partition(dist, k - 1, axis=1)[:, k - 1]
    return out


def clip_statistics(x: np.ndarray) -> np.ndarray:
    """Each clip's input statistics (n, 2 * features) float64: the mean and the standard deviation
    over frames of each feature of unscaled features x (n, frames, features)."""
    x = np.asarray(x)
    out = np.zeros((len(x), 2 * x.shape[-1]))
    for start in range(0, len(x), KNN_CHUNK):  # float64 a block at a time: bounded memory
        block = x[start:start + KNN_CHUNK].astype(np.float64)
        out[start:start + KNN_CHUNK] = np.concatenate([block.mean(axis=1), block.std(axis=1)], axis=1)
    return out


def fit_two_spaces(train_embeddings: np.ndarray, train_statistics: np.ndarray,
                   validation: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The reference of the two-space k-NN score: the training clips' embeddings (n, dim) and
    standardised statistics (n, 2F) with the standardisation ("feature_mean", "feature_std"
    (2F,)), and, given the validation clips' (embeddings, statistics), their sorted distances in
    each space, against which a clip's distances become percentiles."""
    mean = train_statistics.mean(axis=0)
    std = train_statistics.std(axis=0) + 1e-6
    reference = {"embeddings": np.asarray(train_embeddings, dtype=np.float32), "feature_mean": mean,
                 "feature_std": std, "features": ((train_statistics - mean) / std).astype(np.float32)}
    if validation is not None:
        embedding_d, feature_d = two_space_distances(*validation, reference)
        reference["validation_embedding_distances"] = np.sort(embedding_d)
        reference["validation_feature_distances"] = np.sort(feature_d)
    return reference


def two_space_distances(embeddings: np.ndarray, statistics: np.ndarray, reference: dict) -> tuple[np.ndarray, np.ndarray]:
    """k-NN distances (n,) each in the embedding space and in the standardised-statistics space."""
    standardised = (np.asarray(statistics, dtype=np.float64) - reference["feature_mean"]) / reference["feature_std"]
    return knn_score(embeddings, reference["embeddings"]), knn_score(standardised, reference["features"])


def two_space_score(embeddings: np.ndarray, statistics: np.ndarray, reference: dict) -> np.ndarray:
    """The larger (n,) of the two distances' percentiles among the validation clips (in [0, 1])."""
    embedding_d, feature_d = two_space_distances(embeddings, statistics, reference)
    return np.maximum(_percentile(embedding_d, reference["validation_embedding_distances"]),
                      _percentile(feature_d, reference["validation_feature_distances"]))


def _percentile(values: np.ndarray, sorted_reference: np.ndarray) -> np.ndarray:
    """Share (n,) of the reference values at or below each value."""
    return np.searchsorted(sorted_reference, values, side="right") / len(sorted_reference)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def threshold_at(validation_scores: np.ndarray, accept: float = ACCEPT_RATE) -> float:
    """The score below or at which `accept` of the validation clips fall (their quantile)."""
    return float(np.quantile(np.asarray(validation_scores, dtype=np.float64), accept))


def unlike_training(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Verdict (n,) bool: True where the score is above the threshold."""
    return np.asarray(scores) > threshold


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float | None:
    """Area under the ROC curve for telling out (positive) from in clips by score
    (sklearn.metrics.roc_auc_score); None when either side is empty."""
    from sklearn.metrics import roc_auc_score

    if len(in_scores) == 0 or len(out_scores) == 0:
        return None
    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def all_scores(logits: np.ndarray, embeddings: np.ndarray | None = None, gaussians: dict | None = None,
               reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every method's scores (n,) that the inputs allow: method key -> scores."""
    out = {"max_softmax": max_softmax_score(logits), "energy": energy_score(logits)}
    if embeddings is not None and gaussians is not None:
        out["mahalanobis"] = mahalanobis_score(embeddings, gaussians)
    if embeddings is not None and reference is not None:
        out["knn"] = knn_score(embeddings, reference)
    return out


@contextmanager
def captured_embeddings(model: Any) -> Iterator[list]:
    """While open, every forward pass of `model` appends its embedding, the input of its linear
    `head` (the pooled last hidden state; dropout is off in eval mode), to the yielded list as a
    float32 tensor (batch, dim). Callers keep their own batching and autocast."""
    captured: list = []
    handle = model.head.register_forward_pre_hook(lambda _module, args: captured.append(args[0].detach().float()))
    try:
        yield captured
    finally:
        handle.remove()

