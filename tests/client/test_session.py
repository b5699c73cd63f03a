"""The session vector: the latest events as a shift of the ranking query."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.session import (
    SessionConfig,
    session_query,
    session_vector,
    session_vectors,
)
from fedpers.client.training.local import LocalTrainConfig
from fedpers.privacy.errors import ConfigError

VECS = np.arange(20, dtype=np.float64).reshape(10, 2)


def test_decay_weights_the_newest_item_most() -> None:
    # items 1 (older) and 3 (newest) with decay 0.5: weights 0.5 and 1, normalised
    got = session_vector(VECS, np.array([1, 3]), decay=0.5, window=10)
    expected = (0.5 * VECS[1] + 1.0 * VECS[3]) / 1.5
    np.testing.assert_allclose(got, expected)


def test_window_keeps_only_the_newest_items_and_decay_one_is_a_plain_mean() -> None:
    history = np.array([9, 8, 0, 1, 2])
    got = session_vector(VECS, history, decay=1.0, window=3)
    np.testing.assert_allclose(got, VECS[[0, 1, 2]].mean(axis=0))


def test_order_matters() -> None:
    a = session_vector(VECS, np.array([0, 9]), decay=0.5, window=10)
    b = session_vector(VECS, np.array([9, 0]), decay=0.5, window=10)
    assert not np.allclose(a, b)
    assert np.linalg.norm(a - VECS[9]) < np.linalg.norm(b - VECS[9])


def test_empty_history_gives_zeros_and_weight_zero_gives_the_user_vector() -> None:
    np.testing.assert_array_equal(session_vector(VECS, np.array([], np.int64), 0.7, 5), [0, 0])
    u = np.array([0.5, -1.0], dtype=np.float32)
    q = session_query(u, VECS, np.array([3, 4]), SessionConfig(weight=0.0))
    np.testing.assert_array_equal(q, u)
    q[0] = 99.0
    assert u[0] == 0.5  # a new array, the input is untouched
    shifted = session_query(u, VECS, np.array([4]), SessionConfig(weight=2.0))
    np.testing.assert_allclose(shifted, u + 2.0 * VECS[4])


def test_batched_equals_one_by_one() -> None:
    histories = [np.array([1, 2, 3]), np.array([], np.int64), np.array([7])]
    stacked = session_vectors(VECS, histories, 0.6, 2)
    for row, h in zip(stacked, histories, strict=True):
        np.testing.assert_allclose(row, session_vector(VECS, h, 0.6, 2))
    assert session_vectors(VECS, [], 0.6, 2).shape == (0, 2)


@pytest.mark.parametrize(
    ("weight", "decay", "window"),
    [(-0.1, 0.7, 5), (float("nan"), 0.7, 5), (1.0, 0.0, 5), (1.0, 1.5, 5), (1.0, 0.7, 0)],
)
def test_bad_settings_are_named_errors(weight: float, decay: float, window: int) -> None:
    with pytest.raises(ConfigError):
        SessionConfig(weight, decay, window)
    with pytest.raises(ConfigError):
        LocalTrainConfig(session_weight=weight, session_decay=decay, session_window=window)


def test_history_outside_the_catalogue_is_refused() -> None:
    with pytest.raises(ConfigError, match="outside the catalogue"):
        session_vector(VECS, np.array([1, 10]), 0.7, 5)
    with pytest.raises(ConfigError, match="outside the catalogue"):
        session_vector(VECS, np.array([-1]), 0.7, 5)


def test_config_round_trips_through_model_meta() -> None:
    cfg = SessionConfig(weight=2.0, decay=0.6, window=7)
    assert SessionConfig.from_meta(cfg.to_meta()) == cfg
    assert SessionConfig.from_meta(None) == SessionConfig() and SessionConfig().weight == 0.0
    with pytest.raises(ConfigError, match="bad session settings"):
        SessionConfig.from_meta({"weight": "lots"})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=30),
    st.floats(0.05, 1.0),
    st.integers(1, 12),
)
def test_session_vector_is_a_convex_combination_of_the_window(
    history: list[int], decay: float, window: int
) -> None:
    """Bound: every coordinate lies between the window's minimum and maximum."""
    recent = VECS[np.asarray(history)[-window:]]
    got = session_vector(VECS, np.asarray(history), decay, window)
    assert np.all(got >= recent.min(axis=0) - 1e-9)
    assert np.all(got <= recent.max(axis=0) + 1e-9)
