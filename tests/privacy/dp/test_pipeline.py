"""The round pipeline: device privatization, plaintext sum, coordinator finalization."""

from __future__ import annotations

import numpy as np
import pytest

from fedpers.privacy.dp import (
    PIPELINE_ORDER,
    NonFiniteUpdateError,
    device_rng,
    expected_cohort_size,
    finalize_aggregate,
    finalize_indicator_sum,
    l2_norm,
    noise_share_std,
    privatize_device_update,
    server_rng,
    sum_updates,
)
from fedpers.privacy.dp import pipeline as pipeline_module
from fedpers.privacy.errors import ConfigError, DataError


def _delta(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    return [
        (rng.standard_normal((6, 3)) * scale).astype(np.float32),
        (rng.standard_normal(6) * scale).astype(np.float32),
    ]


def test_order_is_stated_once_and_matches_the_docstring() -> None:
    assert PIPELINE_ORDER.index("clip_update") < PIPELINE_ORDER.index("add_noise_share")
    assert PIPELINE_ORDER.index("add_noise_share") < PIPELINE_ORDER.index("encrypt")
    assert PIPELINE_ORDER.index("decrypt_sum") < PIPELINE_ORDER.index("add_central_noise")
    assert PIPELINE_ORDER.index("add_central_noise") < PIPELINE_ORDER.index(
        "divide_by_expected_cohort"
    )
    assert PIPELINE_ORDER[-2:] == ("server_optimizer", "publish_and_account")
    doc = pipeline_module.__doc__ or ""
    positions = [doc.index(w) for w in ["clip the WHOLE", "noise share", "encrypt", "decrypt"]]
    assert positions == sorted(positions)


def test_device_side_without_noise_is_plain_clipping() -> None:
    delta = _delta(np.random.default_rng(0), 10.0)
    out = privatize_device_update(delta, 1.0, 0.0, device_rng(0, 1, 1))
    assert out.clipped and out.norm == pytest.approx(l2_norm(delta))
    assert l2_norm(out.arrays) == pytest.approx(1.0, rel=1e-5)
    assert out.indicator is None


def test_device_noise_share_is_reproducible_from_the_stream() -> None:
    delta = _delta(np.random.default_rng(0), 0.01)
    std = noise_share_std(1.0, 1.0, 4)
    a = privatize_device_update(delta, 1.0, std, device_rng(3, 2, 9))
    b = privatize_device_update(delta, 1.0, std, device_rng(3, 2, 9))
    c = privatize_device_update(delta, 1.0, std, device_rng(3, 2, 10))
    for x, y, z, d in zip(a.arrays, b.arrays, c.arrays, delta, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
        assert not np.array_equal(x, d)
    assert not a.clipped


def test_indicator_is_centred_and_noised_only_when_asked() -> None:
    small = [np.full(4, 0.1, np.float32)]
    big = [np.full(4, 10.0, np.float32)]
    assert privatize_device_update(
        small, 1.0, 0.0, device_rng(0, 0, 0), indicator_noise_share_std=0.0
    ).indicator == pytest.approx(0.5)
    assert privatize_device_update(
        big, 1.0, 0.0, device_rng(0, 0, 0), indicator_noise_share_std=0.0
    ).indicator == pytest.approx(-0.5)
    noisy = privatize_device_update(
        small, 1.0, 0.0, device_rng(0, 0, 0), indicator_noise_share_std=1.0
    ).indicator
    assert noisy is not None and noisy != 0.5


def test_device_side_rejects_nan_and_bad_std() -> None:
    with pytest.raises(NonFiniteUpdateError):
        privatize_device_update([np.array([np.nan], np.float32)], 1.0, 0.0, device_rng(0, 0, 0))
    with pytest.raises(ConfigError):
        privatize_device_update([np.ones(2, np.float32)], 1.0, -0.1, device_rng(0, 0, 0))


def test_central_and_distributed_paths_have_the_same_noise_scale() -> None:
    """Distributed shares (m devices) and central noise give the same total variance."""
    m, sigma, c, coords = 40, 1.0, 0.5, 3000
    zeros = [np.zeros(coords, np.float32)]
    shares = [
        privatize_device_update(zeros, c, noise_share_std(sigma, c, m), device_rng(1, 1, i))
        for i in range(m)
    ]
    distributed = finalize_aggregate(
        sum_updates([s.arrays for s in shares]),
        central_noise_std=0.0,
        denominator=m,
        rng=server_rng(1, 1),
    )[0]
    central = finalize_aggregate(
        sum_updates([zeros] * m), central_noise_std=sigma * c, denominator=m, rng=server_rng(1, 1)
    )[0]
    target = (sigma * c / m) ** 2
    assert np.var(distributed) == pytest.approx(target, rel=0.12)
    assert np.var(central) == pytest.approx(target, rel=0.12)


def test_finalize_divides_by_the_expected_cohort() -> None:
    summed = [np.array([4.0, 8.0], np.float32)]
    out = finalize_aggregate(summed, central_noise_std=0.0, denominator=4.0, rng=server_rng(0, 0))
    np.testing.assert_allclose(out[0], [1.0, 2.0])
    with pytest.raises(ConfigError):
        finalize_aggregate(summed, central_noise_std=0.0, denominator=0.0, rng=server_rng(0, 0))
    with pytest.raises(NonFiniteUpdateError):
        finalize_aggregate(
            [np.array([np.inf], np.float32)],
            central_noise_std=0.0,
            denominator=1.0,
            rng=server_rng(0, 0),
        )


def test_sum_updates_checks_shapes() -> None:
    with pytest.raises(DataError):
        sum_updates([])
    with pytest.raises(DataError):
        sum_updates([[np.zeros(2, np.float32)], [np.zeros(3, np.float32)]])
    total = sum_updates([[np.ones(2, np.float32)], [np.ones(2, np.float32) * 2]])
    np.testing.assert_array_equal(total[0], [3.0, 3.0])


def test_indicator_sum_estimates_the_unclipped_fraction() -> None:
    # 7 unclipped, 3 clipped of an expected 10
    total = 7 * 0.5 + 3 * -0.5
    assert finalize_indicator_sum(
        total, central_noise_std=0.0, expected_cohort=10, rng=server_rng(0, 0)
    ) == pytest.approx(0.7)


def test_expected_cohort_size() -> None:
    assert expected_cohort_size("poisson", 943, sample_rate=0.1) == pytest.approx(94.3)
    assert expected_cohort_size("fixed", 943, cohort=50) == 50.0
    with pytest.raises(ConfigError):
        expected_cohort_size("fixed", 943, cohort=1000)
    with pytest.raises(ConfigError):
        expected_cohort_size("poisson", 943)
    with pytest.raises(ConfigError):
        expected_cohort_size("uniform", 943, cohort=3)
