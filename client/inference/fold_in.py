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
    positive) and moves ``u`` by ``lr`` times the mean BPR gradient plus ``l2 * u``.
    Pure: the inputs are not modified.

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
        g = -1.0 / (1.0 + np.exp(np.clip(x, -30.0, 30.0)))  # d(-log sigmoid x)/dx
        grad = (g @ diff) / pos.size + l2 * u
        u = (u - lr * grad).astype(np.float32)
    return u
