"""Acceptance models against their closed forms."""

import numpy as np
import pytest

from servesim.speculation import (FixedAcceptance, TruncatedGeometricAcceptance,
                                  default_max_accepted, interpolate_curve,
                                  solve_continue_probability, truncated_geometric_mean)


def test_truncated_geometric_mean_closed_form():
    # q = 0.5, K = 3: 1 + 0.5 + 0.25
    assert truncated_geometric_mean(0.5, 3) == pytest.approx(1.75)
    assert truncated_geometric_mean(0.0, 6) == 1.0
    assert truncated_geometric_mean(1.0, 6) == 6.0


def test_solve_inverts_the_mean():
    q = solve_continue_probability(2.4, 6)
    assert truncated_geometric_mean(q, 6) == pytest.approx(2.4, abs=1e-12)
    with pytest.raises(ValueError):
        solve_continue_probability(7.0, 6)


@pytest.mark.parametrize("mean,k", [(2.4, 6), (3.3, 6), (1.5, 2), (2.9, 4)])
def test_sampler_mean_and_tail_match_closed_form(mean, k):
    model = TruncatedGeometricAcceptance.with_mean(mean, k)
    draws = model.draw(np.random.default_rng(1), 200_000)
    assert draws.min() >= 1 and draws.max() <= k
    se = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - mean) < 4 * se
    # P(A >= j) = q^(j-1)
    q = model.continue_probability
    for j in range(2, k + 1):
        assert (draws >= j).mean() == pytest.approx(q ** (j - 1), abs=0.005)


def test_degenerate_cases():
    rng = np.random.default_rng(0)
    assert (TruncatedGeometricAcceptance.with_mean(1.0, 1).draw(rng, 10) == 1).all()
    assert (FixedAcceptance(3).draw(rng, 5) == 3).all()
    assert default_max_accepted(1, 5) == 1
    assert default_max_accepted(64, 5) == 6


def test_curve_interpolation():
    curve = {1: 1.0, 16: 2.4, 32: 2.7}
    assert interpolate_curve(curve, 24) == pytest.approx(2.55)
    with pytest.raises(ValueError):
        interpolate_curve(curve, 40)
