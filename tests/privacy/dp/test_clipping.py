"""Whole-update clipping: bounds, identity below C, direction, rejection of NaN/inf."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedpers.privacy.dp import (
    NonFiniteUpdateError,
    clip_update,
    flatten,
    is_finite_update,
    l2_norm,
    unflatten,
)
from fedpers.privacy.errors import ConfigError, DataError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
update = st.lists(
    arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 4)), elements=finite),
    min_size=1,
    max_size=3,
)
clip = st.floats(min_value=1e-3, max_value=1e3)


@settings(max_examples=200, deadline=None)
@given(update, clip)
def test_norm_after_clipping_is_at_most_c(arrays_: list[np.ndarray], c: float) -> None:
    result = clip_update(arrays_, c)
    assert l2_norm(result.arrays) <= c * (1 + 1e-5) + 1e-12
    assert math.isclose(result.norm, l2_norm(arrays_), rel_tol=1e-12)
    assert result.clipped == (result.norm > c)


@settings(max_examples=200, deadline=None)
@given(update, clip)
def test_update_within_bound_is_unchanged(arrays_: list[np.ndarray], c: float) -> None:
    bound = l2_norm(arrays_) * 1.01 + c
    result = clip_update(arrays_, bound)
    assert not result.clipped
    for before, after in zip(arrays_, result.arrays, strict=True):
        np.testing.assert_array_equal(before, after)
        assert after is not before  # a copy


@settings(max_examples=200, deadline=None)
@given(update, clip)
def test_clipping_preserves_direction(arrays_: list[np.ndarray], c: float) -> None:
    result = clip_update(arrays_, c)
    before, after = flatten(arrays_).astype(np.float64), flatten(result.arrays).astype(np.float64)
    if np.linalg.norm(before) == 0:
        assert np.linalg.norm(after) == 0
        return
    # after = s * before with 0 < s <= 1 (up to float32 rounding)
    scale = min(1.0, c / np.linalg.norm(before))
    np.testing.assert_allclose(after, before * scale, rtol=1e-6, atol=1e-30)


def test_clip_scales_whole_update_not_each_array() -> None:
    result = clip_update([np.array([3.0], np.float32), np.array([4.0], np.float32)], 1.0)
    assert result.norm == pytest.approx(5.0)
    assert [a.item() for a in result.arrays] == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_updates_are_rejected_with_a_named_error(bad: float) -> None:
    arrays_ = [np.zeros(3, np.float32), np.array([1.0, bad], np.float32)]
    assert not is_finite_update(arrays_)
    with pytest.raises(NonFiniteUpdateError):
        clip_update(arrays_, 1.0)
    assert issubclass(NonFiniteUpdateError, DataError)


def test_huge_update_is_clipped_to_c() -> None:
    result = clip_update([np.full(10, 3e8, np.float32)], 2.0)
    assert result.clipped and result.norm == pytest.approx(3e8 * math.sqrt(10))
    assert l2_norm(result.arrays) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("c", [0.0, -1.0, math.inf, math.nan])
def test_invalid_clip_norm(c: float) -> None:
    with pytest.raises(ConfigError):
        clip_update([np.ones(2, np.float32)], c)


def test_flatten_unflatten_round_trip() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (4,), (2, 3)]]
    flat = flatten(parts)
    assert flat.shape == (22,) and flat.dtype == np.float32
    back = unflatten(flat, [p.shape for p in parts])
    for a, b in zip(parts, back, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError):
        unflatten(flat, [(4, 3)])
    assert flatten([]).size == 0
