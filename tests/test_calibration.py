"""Tests for eft.calibration: temperature scaling of the head's outputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from eft.calibration import (
    binary_negative_log_likelihood,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def _sampled(temperature: float, n: int = 20_000, classes: int = 5, seed: int = 0):
    """Scores and labels drawn from softmax(scores / temperature): a known right answer."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, classes))
    proba = softmax(scores / temperature, axis=1)
    labels = (proba.cumsum(1) > rng.random((n, 1))).argmax(1)
    return scores, labels


@pytest.mark.parametrize("temperature", [0.1, 1.0, 4.0])
def test_fit_temperature_recovers_the_temperature_that_generated_the_labels(temperature):
    scores, labels = _sampled(temperature)
    fitted = fit_temperature(scores, labels)
    assert fitted == pytest.approx(temperature, rel=0.08)
    best = negative_log_likelihood(scores, labels, fitted)
    for other in (fitted * 0.8, fitted * 1.25):  # a minimum, not just a point near it
        assert best < negative_log_likelihood(scores, labels, other)


def test_ridge_like_outputs_get_a_small_temperature_and_a_lower_nll():
    # one-hot ridge targets: outputs near 1 for the right class, near 0 elsewhere
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, size=3000)
    scores = np.eye(6)[labels] * 0.8 + rng.normal(scale=0.25, size=(3000, 6))
    fitted = fit_temperature(scores, labels)
    assert 0.02 < fitted < 0.5
    plain, scaled = softmax(scores, axis=1), softmax(scores / fitted, axis=1)
    assert plain.max(1).mean() < 0.4  # the flat softmax the scaling is for
    assert negative_log_likelihood(scores, labels, fitted) < negative_log_likelihood(scores, labels)
    assert expected_calibration_error(scaled, labels) < expected_calibration_error(plain, labels)
    np.testing.assert_array_equal(scaled.argmax(1), scores.argmax(1))


def test_expected_calibration_error_by_hand():
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins (1/15 wide): {0.9, 0.9} accuracy 0.5 -> |0.5 - 0.9| x 2/4; {0.6} 1 -> 0.4 x 1/4;
    # {0.7} 1 -> 0.3 x 1/4
    assert expected_calibration_error(proba, labels) == pytest.approx(0.2 + 0.1 + 0.075)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_a_temperature_at_the_end_of_its_range_warns():
    labels = np.array([0, 1, 2, 0])  # every text right, with a margin: T falls to its bound
    with pytest.warns(RuntimeWarning, match="unreliable: every one is classified right"):
        assert fit_temperature(np.eye(3)[labels], labels) < 0.05
    # half right with a margin, half tied: the NLL still falls at the bound, for another reason
    tied = np.r_[np.eye(3)[[0, 1]] * 1e-3, np.zeros((2, 3))]
    with pytest.warns(RuntimeWarning, match=r"unreliable: the NLL still falls .* \(nearly\) tied"):
        fit_temperature(tied, np.array([0, 1, 2, 0]))
    with pytest.warns(RuntimeWarning, match="The sigmoid temperature reached the top"):
        fit_temperature(np.zeros((4, 2)) + 0.5, np.array([[0, 1], [1, 0], [1, 1], [0, 0]]), 0.5)
    rng = np.random.default_rng(2)  # outputs unrelated to the labels: T rises to its bound
    with pytest.warns(RuntimeWarning, match="almost no information"):
        fit_temperature(rng.normal(size=(500, 3)) * 1e-3, rng.integers(0, 3, 500))


def test_fit_temperature_refuses_mismatched_input():
    with pytest.raises(ValueError, match="one label per row"):
        fit_temperature(np.zeros((3, 2)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="one label per row"):
        fit_temperature(np.zeros(3), np.zeros(3, dtype=int))


@pytest.mark.parametrize("temperature", [0.05, 0.3])
def test_multi_label_temperature_recovers_the_one_that_generated_the_labels(temperature):
    """Multi-label: each label is 1 with probability sigmoid((score - 0.5) / T)."""
    rng = np.random.default_rng(1)
    scores = rng.uniform(-0.5, 1.5, size=(8000, 4))
    targets = (rng.random(scores.shape) < 1 / (1 + np.exp(-(scores - 0.5) / temperature))) * 1
    fitted = fit_temperature(scores, targets, threshold=0.5)
    assert fitted == pytest.approx(temperature, rel=0.08)
    best = binary_negative_log_likelihood(scores, targets, fitted, 0.5)
    assert best < binary_negative_log_likelihood(scores, targets, 2 * fitted, 0.5)
    assert best < binary_negative_log_likelihood(scores, targets, fitted / 2, 0.5)
    # by hand: one label, score at the threshold, T = 1: -log(1/2)
    assert binary_negative_log_likelihood(np.array([[0.5]]), np.array([[1]]), 1.0, 0.5) == (
        pytest.approx(np.log(2))
    )
    with pytest.raises(ValueError, match="a 0/1 row and a threshold"):
        fit_temperature(scores, targets)  # a 0/1 matrix needs the threshold


def test_fit_label_thresholds_reaches_the_best_f1_of_any_threshold():
    """Against a brute force over every threshold between and around the scores."""
    from sklearn.metrics import f1_score

    from eft.calibration import fit_label_thresholds

    rng = np.random.default_rng(2)
    targets = (rng.random((300, 4)) < [0.1, 0.3, 0.5, 0.0]).astype(int)
    scores = np.round(0.4 * targets + rng.normal(0.3, 0.25, size=targets.shape), 2)  # ties
    thresholds = fit_label_thresholds(scores, targets, default=0.5)
    for j in range(3):
        values = np.unique(scores[:, j])
        candidates = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2])
        best = max(f1_score(targets[:, j], scores[:, j] > t) for t in candidates)
        assert f1_score(targets[:, j], scores[:, j] > thresholds[j]) == pytest.approx(best)
        assert f1_score(targets[:, j], scores[:, j] > thresholds[j]) >= f1_score(
            targets[:, j], scores[:, j] > 0.5
        )
        assert not np.isin(thresholds[j], scores[:, j])  # between scores, never on one
    assert thresholds[3] == 0.5  # no positive: the fixed threshold is kept


def test_fit_label_thresholds_keeps_the_default_where_it_is_as_good():
    from eft.calibration import fit_label_thresholds

    scores = np.array([[0.9, 0.1], [0.6, 0.2], [0.4, 0.3], [0.2, 0.35]])
    # label 0: the first three are positive, best cut between 0.4 and 0.2: its middle, 0.3;
    # label 1: only 0.1 and 0.35 are positive; predicting the top one (t in [0.3, 0.35)) and
    # predicting all tie at F1 2/3: the cut nearer 0.5 wins, its middle 0.325
    targets = np.array([[1, 1], [1, 0], [1, 0], [0, 1]])
    np.testing.assert_allclose(fit_label_thresholds(scores, targets, 0.5), [0.3, 0.325])
    # the fixed threshold already separates label 0 perfectly: kept
    separable = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    np.testing.assert_allclose(fit_label_thresholds(scores, separable, 0.5)[0], 0.5)
    # every text positive: the cut below all scores, under the lowest one
    everyone = np.ones((4, 2), dtype=int)
    assert fit_label_thresholds(scores, everyone, 0.5)[0] < 0.2
    with pytest.raises(ValueError, match="of one shape"):
        fit_label_thresholds(scores, targets[:3], 0.5)
