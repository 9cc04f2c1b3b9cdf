import numpy as np
import pytest

from radfm.metrics.bootstrap import Bootstrap, bootstrap_mean, mean_stats, reduce_mean


def test_point_value_is_the_plain_mean_and_nan_cases_are_skipped():
    estimate = bootstrap_mean(np.array([1.0, 0.0, np.nan, 1.0, 1.0]), n_resamples=200)
    assert estimate.value == pytest.approx(0.75)
    assert estimate.n == 4
    assert 0.0 <= estimate.ci_low <= estimate.value <= estimate.ci_high <= 1.0


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(0).random(300)
    first = bootstrap_mean(values, seed=7)
    assert first == bootstrap_mean(values, seed=7)
    assert (first.ci_low, first.ci_high) != (bootstrap_mean(values, seed=8).ci_low, bootstrap_mean(values, seed=8).ci_high)


def test_interval_narrows_as_cases_grow():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 500, 5000):
        estimate = bootstrap_mean(rng.random(n) < 0.5, seed=0)
        widths.append(estimate.ci_high - estimate.ci_low)
    assert widths[0] > widths[1] > widths[2] > 0
    # ~1/sqrt(n): a 10x larger sample gives a ~3.2x narrower interval
    assert 2.0 < widths[0] / widths[1] < 5.0


def test_weights_are_multinomial_resamples_of_all_cases():
    plan = Bootstrap(37, n_resamples=50, seed=3)
    assert plan.weights.shape == (50, 37)
    assert np.all(plan.weights.sum(axis=1) == 37)
    assert np.all(plan.weights == np.round(plan.weights))


def test_resampled_means_equal_explicit_index_resampling():
    values = np.random.default_rng(2).random(40)
    plan = Bootstrap(40, n_resamples=20, seed=5)
    _, draws = plan.point_and_resampled(mean_stats(values), reduce_mean)
    for row, weights in enumerate(plan.weights):
        explicit = np.repeat(values, weights.astype(int)).mean()
        assert draws[row] == pytest.approx(explicit)


def test_interval_of_a_normal_mean_matches_the_textbook_width():
    values = np.random.default_rng(4).normal(size=2000)
    estimate = bootstrap_mean(values)
    textbook = 2 * 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert estimate.ci_high - estimate.ci_low == pytest.approx(textbook, rel=0.15)


def test_empty_and_bad_plans():
    estimate = bootstrap_mean(np.array([]))
    assert estimate.n == 0 and np.isnan(estimate.value)
    with pytest.raises(ValueError, match="confidence"):
        Bootstrap(3, confidence=1.5)
    with pytest.raises(ValueError, match="rows"):
        Bootstrap(3).resampled_sums(np.zeros((4, 2)))
