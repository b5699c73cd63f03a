"""Per-event fold-in of the private user vector (numpy only, no torch import).

Serving (``fedpers client recommend``, the API's per-request fold-in) updates a user
vector against the frozen global item side without loading torch;
:mod:`fedpers.client.training.local` re-exports :func:`fold_in` for the training code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fold_in"]


def fold_in(
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
    """A few BPR gradient steps on the user vector alone; the shared side stays frozen.

    Each step draws one uniform negative per positive (re-drawn once when it hits a
    positive) and moves ``u`` by ``lr`` times the mean BPR gradient plus ``l2 * u``::

        neg = rng.integers(0, items, size=len(pos))
        neg[hit] = rng.integers(0, items, size=hit.sum())  # hit: neg is a positive
        diff = v[pos] - v[neg]
        x = diff @ u + b[pos] - b[neg]
        g = -1.0 / (1.0 + exp(clip(x, -30.0, 30.0)))  # d(-log sigmoid x)/dx
        u = (u - lr * ((g @ diff) / len(pos) + l2 * u)).astype(float32)

    Each step runs these operations in this order and dtypes, so the result is
    bit-identical to that text; only numpy's per-call overhead is cut (this runs on every
    API request). Pure: the inputs are not modified.

    Args:
        user_vector: ``[dim]`` current private vector.
        item_vectors: ``[items, dim]`` global item vectors.
        item_bias: ``[items]`` global item bias.
        positive_items: item indices the user interacted with (empty: no change).
        steps: number of gradient steps.
        lr: step size.
        rng: the device's generator for the negatives.
        l2: weight decay on the user vector.

    Returns:
        The new ``float32[dim]`` user vector.
    """
    u = np.array(user_vector, dtype=np.float32, copy=True)
    pos = np.asarray(positive_items, dtype=np.int64)
    if pos.size == 0 or steps <= 0:
        return u
    n_items = item_vectors.shape[0]
    m = pos.size
    pos_set = np.zeros(n_items, dtype=bool)
    pos_set[pos] = True
    vp = item_vectors[pos]
    bp = item_bias[pos]
    # The docstring's Python scalars as 0-d arrays of the dtype each one takes there (a
    # weak Python scalar takes the array's dtype; a numpy scalar keeps its own): the same
    # values and promotions, but 0.3 us per operation on these small arrays instead of
    # 0.5-1.1 us (measured).
    x_type = np.result_type(item_vectors.dtype, np.float32, item_bias.dtype)  # x and g
    g_type = np.result_type(x_type, item_vectors.dtype)  # g @ diff
    decay_type = np.result_type(l2, np.float32)
    grad_type = np.result_type(g_type, decay_type)
    lo, hi = np.asarray(-30.0, dtype=x_type), np.asarray(30.0, dtype=x_type)
    one, minus_one = np.asarray(1.0, dtype=x_type), np.asarray(-1.0, dtype=x_type)
    count = np.asarray(m, dtype=g_type)
    decay = np.asarray(l2, dtype=decay_type)
    rate = np.asarray(lr, dtype=np.result_type(lr, grad_type))
    for _ in range(steps):
        neg = rng.integers(0, n_items, size=m)
        hit = pos_set[neg]
        n_hit = np.count_nonzero(hit)
        if n_hit:
            neg[hit] = rng.integers(0, n_items, size=n_hit)
        diff = vp - item_vectors.take(neg, axis=0)  # take: 0.7 us, indexing: 1.0 us
        x = diff @ u + bp - item_bias[neg]
        # maximum then minimum is np.clip (NaN too) without its 2 us Python wrapper
        g = minus_one / (one + np.exp(np.minimum(np.maximum(x, lo), hi)))
        grad = (g @ diff) / count + decay * u
        u = (u - rate * grad).astype(np.float32, copy=False)
    return u
