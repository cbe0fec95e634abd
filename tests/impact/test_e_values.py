"""E-values (VanderWeele & Ding 2017) as impact/estimators.py computes them: pure functions."""
from __future__ import annotations

import numpy as np
import pytest

from impact.estimators import e_value, e_values


def test_e_value_matches_the_published_example_and_is_symmetric():
    # VanderWeele & Ding's worked example: an observed risk ratio of 3.9 has an E-value of 7.26
    assert e_value(3.9) == pytest.approx(7.26, abs=0.005)
    assert e_value(0.5) == pytest.approx(e_value(2.0)) == pytest.approx(2 + 2 ** 0.5)
    assert e_value(1.0) == 1.0


def test_e_values_of_a_risk_difference_and_of_its_interval():
    # the treated's risk is 0.2; an estimated difference of -0.2 means 0.4 without it: RR 0.5
    y = np.array([1] * 20 + [0] * 80 + [1] * 40 + [0] * 60, dtype=float)
    treated = np.array([1] * 100 + [0] * 100, dtype=float)
    weights = np.ones(200)
    point, interval = e_values(-0.2, -0.3, -0.1, y, treated, weights, binary=True)
    assert point == pytest.approx(e_value(0.2 / 0.4))
    assert interval == pytest.approx(e_value(0.2 / 0.3))  # the limit nearer no effect: -0.1
    # an interval that includes no effect can be explained away by nothing at all
    assert e_values(-0.2, -0.3, 0.05, y, treated, weights, binary=True)[1] == 1.0


def test_e_values_of_a_continuous_outcome_use_the_standardised_difference():
    rng = np.random.default_rng(1)
    y = np.concatenate([rng.normal(0, 2, 500), rng.normal(0, 2, 500)])
    treated = np.concatenate([np.ones(500), np.zeros(500)])
    sd = y[500:].std()
    point, interval = e_values(1.0, 0.5, 1.5, y, treated, np.ones(1000), binary=False)
    assert point == pytest.approx(e_value(np.exp(0.91 * 1.0 / sd)))
    assert interval == pytest.approx(e_value(np.exp(0.91 * 0.5 / sd)))
