"""Adaptive clipping (Andrew et al. 2021): quantile tracking and combined accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedpers.privacy.dp import (
    AdaptiveClipConfig,
    centered_indicator,
    combined_noise_multiplier,
    default_count_noise_std,
    next_clip_norm,
    noisy_unclipped_fraction,
    update_noise_multiplier,
)
from fedpers.privacy.errors import ConfigError


def test_update_and_combined_multipliers_are_inverse() -> None:
    for sigma, sigma_b in [(1.0, 5.0), (0.7, 2.0), (3.0, 50.0)]:
        sigma_u = update_noise_multiplier(sigma, sigma_b)
        assert sigma_u > sigma
        assert sigma_u == pytest.approx((sigma**-2 - (2 * sigma_b) ** -2) ** -0.5)
        assert combined_noise_multiplier(sigma_u, sigma_b) == pytest.approx(sigma)


def test_count_noise_too_small_is_refused() -> None:
    with pytest.raises(ConfigError):
        update_noise_multiplier(1.0, 0.5)  # 2 sigma_b == sigma
    with pytest.raises(ConfigError):
        update_noise_multiplier(0.0, 5.0)


def test_clip_norm_moves_towards_the_target_quantile() -> None:
    rng = np.random.default_rng(0)
    norms_population = rng.lognormal(mean=0.0, sigma=0.5, size=20_000)
    target_quantile = 0.5
    true_quantile = float(np.quantile(norms_population, target_quantile))  # ~1.0
    config = AdaptiveClipConfig(initial_clip_norm=10.0, target_quantile=0.5, learning_rate=0.2)
    m = 200
    c = config.initial_clip_norm
    sigma_b = default_count_noise_std(m)
    trajectory = [c]
    for round_ in range(150):
        norms = rng.choice(norms_population, size=m, replace=False)
        fraction = noisy_unclipped_fraction(norms, c, m, sigma_b, np.random.default_rng(round_))
        c = next_clip_norm(c, fraction, config.target_quantile, config.learning_rate)
        trajectory.append(c)
    assert trajectory[10] < trajectory[0]  # too large at first: shrinks
    assert abs(math.log(c / true_quantile)) < math.log(1.3)
    # from below it grows
    c = 0.01
    for _ in range(100):
        norms = rng.choice(norms_population, size=m, replace=False)
        fraction = noisy_unclipped_fraction(norms, c, m, 0.0, rng)
        c = next_clip_norm(c, fraction, 0.5, 0.2)
    assert abs(math.log(c / true_quantile)) < math.log(1.3)


def test_geometric_step_and_indicator() -> None:
    assert next_clip_norm(2.0, 0.5, 0.5, 0.2) == pytest.approx(2.0)
    assert next_clip_norm(2.0, 1.0, 0.5, 0.2) == pytest.approx(2.0 * math.exp(-0.1))
    assert centered_indicator(0.5, 1.0) == 0.5 and centered_indicator(1.5, 1.0) == -0.5
    with pytest.raises(ConfigError):
        next_clip_norm(0.0, 0.5, 0.5, 0.2)
    with pytest.raises(ConfigError):
        AdaptiveClipConfig(initial_clip_norm=1.0, target_quantile=1.0)
