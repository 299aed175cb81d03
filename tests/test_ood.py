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


def frames_like(n: int, seed: int, offset: float = 0.0) -> np.ndarray:
    """Unscaled features (n, 5 frames, 6) whose clips differ mostly along one direction of the
    features (as real features do: they are correlated), `offset` added to the first 3 features
    (a clip whose statistics point another way than any training clip's)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, 1, 1)) * np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0]) + rng.normal(0.0, 0.3, (n, 5, 6))
    x[:, :, :3] += offset
    return x.astype(np.float32)


def test_clip_statistics_are_each_features_mean_and_std_over_frames() -> None:
    x = frames_like(7, 0)
    stats = ood.clip_statistics(x)
    wide = x.astype(np.float64)  # the statistics are float64 sums
    np.testing.assert_allclose(stats, np.concatenate([wide.mean(axis=1), wide.std(axis=1)], axis=1), rtol=1e-12)
    assert ood.clip_statistics(np.zeros((0, 5, 6), np.float32)).shape == (0, 12)


def test_the_two_space_score_flags_what_either_space_finds_unlike_training() -> None:
    """A clip the embedding places among training clips but whose input statistics are unlike
    any training clip is flagged, and so is the reverse; validation clips are accepted at the
    95% threshold as fitted."""
    train_e, _ = clusters(400, 0)
    val_e, _ = clusters(200, 1)
    train_x, val_x = frames_like(400, 2), frames_like(200, 3)
    reference = ood.fit_two_spaces(train_e, ood.clip_statistics(train_x), (val_e, ood.clip_statistics(val_x)))
    val_scores = ood.two_space_score(val_e, ood.clip_statistics(val_x), reference)
    assert val_scores.min() >= 0 and val_scores.max() <= 1
    threshold = ood.threshold_at(val_scores)
    assert 0.90 <= 1 - ood.unlike_training(val_scores, threshold).mean() <= 0.96
    near_e, _ = clusters(50, 4)
    loud = ood.clip_statistics(frames_like(50, 5, offset=4.0))  # sounds unlike training, embeds like it
    far_e, _ = clusters(50, 6, shift=5.0)
    quiet = ood.clip_statistics(frames_like(50, 7))  # sounds like training, embeds unlike it
    assert ood.unlike_training(ood.two_space_score(near_e, loud, reference), threshold).mean() >= 0.9
    assert ood.unlike_training(ood.two_space_score(far_e, quiet, reference), threshold).mean() >= 0.9
    normal = ood.two_space_score(near_e, quiet, reference)
    assert ood.unlike_training(normal, threshold).mean() < 0.2
    assert ood.knn_score(near_e, train_e).mean() < ood.knn_score(far_e, train_e).mean()


def test_runs_of_the_first_checks_still_score_by_their_own_method() -> None:
    """A run stored with the embedding-only k-NN check (key "knn") keeps scoring that way."""
    from engine.learn import trust
    train_e, y = clusters(300, 0)
    query, _ = clusters(20, 1)
    stats = {"key": "knn", "threshold": 0.5}
    np.testing.assert_allclose(trust.score(stats, np.zeros((20, 4)), query, {"embeddings": train_e}),
                               ood.knn_score(query, train_e))
    assert trust.usable(stats, {"embeddings": train_e}) and not trust.usable(stats, None)
