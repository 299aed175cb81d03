"""engine.learn.ood's scores and threshold, and engine.data.probes' non-instrument audio."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from engine.learn import ood
from engine.data.probes import KINDS, non_instrument_clips


def clusters(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n, 16) around 4 class centres (plus `shift` on every coordinate) and labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    centres = np.eye(4, 16) * 6.0
    return centres[y] + rng.normal(0, 1, (n, 16)) + shift, y


def test_knn_score_is_the_kth_neighbour_distance_of_normalised_embeddings() -> None:
    train, _ = clusters(300, 0)
    query, _ = clusters(50, 1, shift=0.5)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    reference = NearestNeighbors(n_neighbors=ood.KNN_K).fit(unit(train)).kneighbors(unit(query))[0][:, -1]
    np.testing.assert_allclose(ood.knn_score(query, train), reference, atol=1e-6)


def test_mahalanobis_and_knn_tell_far_clips_from_near_ones() -> None:
    train, y = clusters(400, 0)
    near, _ = clusters(200, 1)
    far = np.random.default_rng(2).normal(0, 1, (200, 16)) * 3 + np.r_[np.zeros(8), np.full(8, 5.0)]
    gaussians = ood.fit_class_gaussians(train, y)
    assert ood.auroc(ood.mahalanobis_score(near, gaussians), ood.mahalanobis_score(far, gaussians)) > 0.95
    assert ood.auroc(ood.knn_score(near, train), ood.knn_score(far, train)) > 0.95


def test_logit_scores_rank_a_confident_answer_as_more_familiar() -> None:
    confident, flat = np.array([[8.0, 0, 0, 0]]), np.array([[0.1, 0, 0, 0]])
    for score in (ood.max_softmax_score, ood.energy_score):
        assert score(confident)[0] < score(flat)[0]
    assert ood.energy_score(np.zeros((1, 8)))[0] == pytest.approx(-np.log(8))


def test_threshold_accepts_the_stated_share_of_validation() -> None:
    scores = np.random.default_rng(3).normal(size=1000)
    threshold = ood.threshold_at(scores)
    assert (~ood.unlike_training(scores, threshold)).mean() == pytest.approx(ood.ACCEPT_RATE, abs=0.002)


def test_auroc_is_sklearns_and_none_without_one_side() -> None:
    assert ood.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert ood.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert ood.auroc(np.array([]), np.array([1.0])) is None


def test_non_instrument_clips_are_seeded_bounded_and_of_every_kind() -> None:
    a = non_instrument_clips(2, 22050, 22050, seed=5)
    b = non_instrument_clips(2, 22050, 22050, seed=5)
    assert list(a) == list(KINDS)
    for kind in KINDS:
        for x, y in zip(a[kind], b[kind]):
            assert x.shape == (22050,) and x.dtype == np.float32 and np.isfinite(x).all()
            assert np.max(np.abs(x)) <= 0.9 + 1e-6 and np.array_equal(x, y)
    assert np.max(np.abs(a["near-silence"][0])) < 0.01 < np.max(np.abs(a["white noise"][0]))


def test_mahalanobis_matches_sklearns_shared_covariance() -> None:
    from sklearn.covariance import EmpiricalCovariance

    train, y = clusters(2000, 4)
    query, _ = clusters(30, 5, shift=1.0)
    gaussians = ood.fit_class_gaussians(train, y)
    means = np.stack([train[y == c].mean(axis=0) for c in range(4)])
    shared = EmpiricalCovariance(assume_centered=True).fit(train - means[y])
    expected = np.min([shared.mahalanobis(query - means[c]) for c in range(4)], axis=0)
    np.testing.assert_allclose(ood.mahalanobis_score(query, gaussians), expected, rtol=5e-3)
