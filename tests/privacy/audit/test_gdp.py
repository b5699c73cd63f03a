"""Gaussian-DP curve: inverse pairs, the accountant's bound above it, the separation estimate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedpers.privacy.audit.gdp import gaussian_delta, gaussian_epsilon, separation
from fedpers.privacy.dp.accounting import epsilon_for
from fedpers.privacy.errors import ConfigError, DataError


@pytest.mark.parametrize("mu", [0.3, 0.77, 1.0, 1.72, 4.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-7])
def test_epsilon_inverts_delta(mu: float, delta: float) -> None:
    eps = gaussian_epsilon(mu, delta)
    if eps == 0.0:
        assert gaussian_delta(0.0, mu) <= delta
    else:
        assert gaussian_delta(eps, mu) == pytest.approx(delta, rel=1e-6)
        assert gaussian_delta(eps * 0.99, mu) > delta


def test_delta_decreases_in_epsilon_and_grows_in_mu() -> None:
    eps = np.linspace(0.0, 10.0, 41)
    deltas = [gaussian_delta(float(e), 1.5) for e in eps]
    assert all(a >= b for a, b in itertools.pairwise(deltas))
    assert gaussian_delta(2.0, 1.0) < gaussian_delta(2.0, 2.0)


def test_delta_at_zero_is_the_total_variation_of_two_unit_gaussians() -> None:
    mu = 1.3
    assert gaussian_delta(0.0, mu) == pytest.approx(math.erf(mu / 2 / math.sqrt(2)))


@pytest.mark.parametrize("sigma", [0.7, 1.298, 3.0])
def test_the_accountant_never_claims_less_than_the_exact_gaussian_epsilon(sigma: float) -> None:
    # the RDP accountant is an upper bound: a figure below the exact curve would be a bug
    delta = 1e-5
    for rounds in (1, 5):
        exact = gaussian_epsilon(math.sqrt(rounds) / sigma, delta)
        accounted = epsilon_for(sigma, 1.0, rounds, delta).epsilon
        assert exact <= accounted


def test_separation_recovers_the_gap_of_two_gaussians() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(40_000) < 0.5
    scores = rng.normal(size=included.size) * 2.0 + 1.5 * 2.0 * included
    assert separation(scores, included) == pytest.approx(1.5, abs=0.05)
    assert separation(-scores, included) == 0.0


def test_bad_arguments_raise_named_errors() -> None:
    with pytest.raises(ConfigError):
        gaussian_epsilon(1.0, 0.0)
    with pytest.raises(ConfigError):
        gaussian_delta(-1.0, 1.0)
    with pytest.raises(DataError):
        separation([1.0, 2.0, 3.0], [True, False, False])
