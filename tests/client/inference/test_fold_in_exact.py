"""``fold_in``: the optimised steps give bit for bit what the textbook steps give."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.inference.fold_in import fold_in


def reference_fold_in(
    user_vector: np.ndarray,
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    positive_items: np.ndarray,
    steps: int,
    lr: float,
    rng: np.random.Generator,
    *,
    l2: float = 0.0,
) -> np.ndarray:
    """The implementation before the per-call overhead was cut, kept verbatim."""
    u = np.array(user_vector, dtype=np.float32, copy=True)
    pos = np.asarray(positive_items, dtype=np.int64)
    if pos.size == 0 or steps <= 0:
        return u
    n_items = item_vectors.shape[0]
    pos_set = np.zeros(n_items, dtype=bool)
    pos_set[pos] = True
    vp = item_vectors[pos]
    bp = item_bias[pos]
    for _ in range(steps):
        neg = rng.integers(0, n_items, size=pos.size)
        hit = pos_set[neg]
        if hit.any():
            neg[hit] = rng.integers(0, n_items, size=int(hit.sum()))
        diff = vp - item_vectors[neg]
        x = diff @ u + bp - item_bias[neg]
        g = -1.0 / (1.0 + np.exp(np.clip(x, -30.0, 30.0)))
        grad = (g @ diff) / pos.size + l2 * u
        u = (u - lr * grad).astype(np.float32)
    return u


def assert_bitwise_equal(a: np.ndarray, b: np.ndarray) -> None:
    """Same dtype, shape and bytes (``-0.0`` and ``0.0`` differ here)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


DTYPES = [np.float32, np.float64]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_items=st.integers(1, 400),
    dim=st.integers(1, 70),
    n_pos=st.integers(1, 40),
    steps=st.integers(0, 12),
    lr=st.sampled_from([0.05, 0.25, 1.0, 7.5]),
    l2=st.sampled_from([0.0, 0.01, 0.3]),
    vector_type=st.sampled_from(DTYPES),
    bias_type=st.sampled_from(DTYPES),
    scale=st.sampled_from([0.1, 1.0, 20.0]),
)
def test_fold_in_is_bit_identical_to_the_reference(
    seed: int,
    n_items: int,
    dim: int,
    n_pos: int,
    steps: int,
    lr: float,
    l2: float,
    vector_type: type,
    bias_type: type,
    scale: float,
) -> None:
    rng = np.random.default_rng(seed)
    items = (rng.standard_normal((n_items, dim)) * scale).astype(vector_type)
    bias = (rng.standard_normal(n_items) * scale).astype(bias_type)
    start = (rng.standard_normal(dim) * scale).astype(np.float32)
    # Duplicates and, on small catalogues, many positives: the negative re-draw runs.
    pos = rng.integers(0, n_items, size=n_pos)
    items_before, bias_before, start_before = items.copy(), bias.copy(), start.copy()
    want = reference_fold_in(
        start, items, bias, pos, steps, lr, np.random.default_rng(seed + 1), l2=l2
    )
    got_rng = np.random.default_rng(seed + 1)
    got = fold_in(start, items, bias, pos, steps, lr, got_rng, l2=l2)
    assert_bitwise_equal(got, want)
    # The same draws: the generators stand at the same place afterwards.
    ref_rng = np.random.default_rng(seed + 1)
    reference_fold_in(start, items, bias, pos, steps, lr, ref_rng, l2=l2)
    assert got_rng.bit_generator.state == ref_rng.bit_generator.state
    np.testing.assert_array_equal(items, items_before)
    np.testing.assert_array_equal(bias, bias_before)
    np.testing.assert_array_equal(start, start_before)


@pytest.mark.parametrize("vector_type", DTYPES)
@pytest.mark.parametrize("bias_type", DTYPES)
@pytest.mark.parametrize("seed", range(40))
def test_the_serving_shape_is_bit_identical(seed: int, vector_type: type, bias_type: type) -> None:
    """The API's fold-in: 1,682 items, dim 64, 10 steps, a fresh generator per request."""
    rng = np.random.default_rng(seed)
    items = (rng.standard_normal((1682, 64)) * 0.3).astype(vector_type)
    bias = rng.standard_normal(1682).astype(bias_type)
    history = rng.choice(1682, size=int(rng.integers(1, 60)), replace=False)
    start = np.zeros(64, dtype=np.float32) if seed % 2 else rng.standard_normal(64)
    args = (start, items, bias, history, 10, 0.25)
    want = reference_fold_in(*args, np.random.default_rng(len(history)), l2=0.01)
    got = fold_in(*args, np.random.default_rng(len(history)), l2=0.01)
    assert_bitwise_equal(got, want)


@pytest.mark.parametrize(
    ("lr", "l2"),
    [
        (np.float64(0.3), 0.01),
        (0.3, np.float64(0.01)),
        (np.float32(0.3), np.float32(0.1)),
        (1, 0),
    ],
)
def test_numpy_scalar_rates_promote_as_in_the_reference(lr: float, l2: float) -> None:
    """A ``np.float64`` rate is not weak like a Python float: the steps then run in float64."""
    rng = np.random.default_rng(7)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    bias = rng.standard_normal(50).astype(np.float32)
    pos = np.array([1, 4, 4, 9])
    start = rng.standard_normal(8).astype(np.float32)
    want = reference_fold_in(start, items, bias, pos, 6, lr, np.random.default_rng(3), l2=l2)
    got = fold_in(start, items, bias, pos, 6, lr, np.random.default_rng(3), l2=l2)
    assert_bitwise_equal(got, want)


def test_saturated_margins_are_clipped_as_in_the_reference() -> None:
    """Scores far beyond +-30: the clip decides the gradient, in float32 and float64."""
    rng = np.random.default_rng(11)
    items = (rng.standard_normal((30, 4)) * 40.0).astype(np.float32)
    for bias_type in DTYPES:
        bias = (rng.standard_normal(30) * 100.0).astype(bias_type)
        start = (rng.standard_normal(4) * 5.0).astype(np.float32)
        pos = np.arange(0, 30, 3)
        want = reference_fold_in(start, items, bias, pos, 8, 0.5, np.random.default_rng(2))
        got = fold_in(start, items, bias, pos, 8, 0.5, np.random.default_rng(2))
        assert_bitwise_equal(got, want)
