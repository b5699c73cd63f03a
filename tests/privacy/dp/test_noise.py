"""Noise calibration, distributed shares and derived random streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedpers.privacy.dp import (
    central_noise_std,
    device_rng,
    distributed_topup_std,
    gaussian_noise_like,
    noise_share_std,
    seed_words,
    server_rng,
)
from fedpers.privacy.errors import ConfigError


def test_noise_share_std_formula() -> None:
    assert noise_share_std(1.5, 2.0, 9) == pytest.approx(1.5 * 2.0 / 3)
    assert central_noise_std(1.5, 2.0) == pytest.approx(3.0)
    with pytest.raises(ConfigError):
        noise_share_std(1.0, 1.0, 0)
    with pytest.raises(ConfigError):
        noise_share_std(-1.0, 1.0, 5)
    with pytest.raises(ConfigError):
        central_noise_std(1.0, 0.0)


def test_sum_of_m_noise_shares_has_variance_sigma2_c2() -> None:
    sigma, c, m, coords = 1.3, 0.7, 50, 4000
    std = noise_share_std(sigma, c, m)
    total = np.zeros(coords)
    for device in range(m):
        total += gaussian_noise_like([np.zeros(coords)], std, device_rng(11, 1, device))[0]
    target = (sigma * c) ** 2
    # sample variance of 4000 iid normals: relative sd sqrt(2/3999) ~ 2.2%; allow 5 sd
    assert np.var(total) == pytest.approx(target, rel=0.11)
    assert abs(np.mean(total)) < 5 * sigma * c / math.sqrt(coords)


def test_topup_completes_missing_shares() -> None:
    sigma, c, m = 2.0, 1.0, 10
    for reporting in [0, 3, 10, 15]:
        top = distributed_topup_std(sigma, c, m, reporting)
        share = noise_share_std(sigma, c, m)
        total = reporting * share**2 + top**2
        expected = (sigma * c) ** 2 if reporting <= m else reporting * share**2
        assert total == pytest.approx(expected)
    assert distributed_topup_std(sigma, c, m, 0) == pytest.approx(sigma * c)


def test_device_streams_are_reproducible_and_distinct() -> None:
    a = device_rng(5, 2, 17).standard_normal(8)
    np.testing.assert_array_equal(a, device_rng(5, 2, 17).standard_normal(8))
    others = [
        device_rng(5, 2, 18),
        device_rng(5, 3, 17),
        device_rng(6, 2, 17),
        device_rng(5, 2, 17, purpose="train"),
        device_rng(5, 2, "17"),
        server_rng(5, 2),
    ]
    for other in others:
        assert not np.array_equal(a, other.standard_normal(8))


def test_seed_words_are_stable_and_typed() -> None:
    assert seed_words(3) == (0, 3)
    assert seed_words(2**40) == (0, 0, 2**8)
    assert seed_words("dev") == seed_words("dev")
    assert seed_words("dev")[0] == 1 and len(seed_words("dev")) == 5
    with pytest.raises(ConfigError):
        seed_words(True)
    with pytest.raises(ConfigError):
        device_rng(-1, 0, 0)


def test_gaussian_noise_like_shapes_dtype_and_zero_std() -> None:
    like = [np.zeros((3, 2)), np.zeros(4)]
    noise = gaussian_noise_like(like, 0.5, np.random.default_rng(0))
    assert [n.shape for n in noise] == [(3, 2), (4,)]
    assert all(n.dtype == np.float32 for n in noise)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    zeros = gaussian_noise_like(like, 0.0, rng)
    assert all(not z.any() for z in zeros)
    assert rng.bit_generator.state == state  # std 0 draws nothing
    with pytest.raises(ConfigError):
        gaussian_noise_like(like, -1.0, rng)
