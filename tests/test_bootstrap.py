"""Bootstrap intervals of per-sample means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.metrics.bootstrap import bootstrap_mean


def test_interval_contains_mean_and_narrows():
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.normal(2.0, 1.0, size=8))
    large = bootstrap_mean(rng.normal(2.0, 1.0, size=400))
    assert small.ci_low <= small.mean <= small.ci_high
    assert large.ci_low <= large.mean <= large.ci_high
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low)
    # With 400 samples of unit variance the 95% interval half-width is about 1.96 / 20.
    assert (large.ci_high - large.ci_low) / 2 == pytest.approx(1.96 / 20, rel=0.25)


def test_interval_is_reproducible():
    values = np.arange(10.0)
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)


def test_non_finite_values_give_nan():
    measurement = bootstrap_mean(np.array([1.0, float("inf"), 2.0]))
    assert math.isnan(measurement.mean)
    assert math.isnan(measurement.ci_low)
    assert measurement.num_samples == 3


def test_constant_values_collapse_interval():
    measurement = bootstrap_mean(np.full(6, 0.25))
    assert (measurement.mean, measurement.ci_low, measurement.ci_high) == (0.25, 0.25, 0.25)
