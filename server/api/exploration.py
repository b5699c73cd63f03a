"""Exploration: Thompson sampling over a share of the recommendation slots.

Of ``k`` slots, :func:`explore_slots` reserves ``round(share * k)`` for exploration
(at least one when ``share > 0``, never all ``k`` when ``k > 1``). The other slots hold the
ranking's best items; the explored slots are filled by :func:`thompson_pick`: each
remaining candidate draws a click-through rate from its Beta posterior
``Beta(1 + clicks, 1 + impressions - clicks)`` over the tenant's aggregate feedback
counters (:mod:`fedpers.server.api.experiments`), and the highest draws win. Items nobody
has seen yet have the widest posterior, so they get shown and the loop closes through
``POST /v1/feedback``. No counter is about a user: only per-item sums.

The functions are pure and take the generator, so a seed makes them deterministic.
"""

from __future__ import annotations

import numpy as np

from fedpers.privacy.errors import ConfigError

__all__ = ["MAX_POOL", "exploration_pool", "explore_slots", "thompson_pick"]

#: At most this many remaining candidates draw a posterior sample per request.
MAX_POOL = 2000


def explore_slots(k: int, share: float) -> int:
    """How many of ``k`` slots are explored at ``share``.

    Example:
        >>> [explore_slots(10, s) for s in (0.0, 0.04, 0.2, 1.0)]
        [0, 1, 2, 9]

    Raises:
        ConfigError: ``share`` outside [0, 1] or ``k < 1``.
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"exploration must be in [0, 1], got {share}")
    if share == 0.0:
        return 0
    n = max(1, round(share * k))
    return min(n, k - 1) if k > 1 else 1


def exploration_pool(
    candidates: np.ndarray, scores: np.ndarray, rng: np.random.Generator, size: int = MAX_POOL
) -> np.ndarray:
    """The candidates that may be explored: all of them, or ``size`` of them.

    Above ``size`` candidates, half the pool is the best-scored remaining candidates and
    half a uniform sample of the rest, so both near misses and the long tail get shown.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.size <= size:
        return candidates
    half = size // 2
    order = np.argpartition(-scores[candidates], half - 1)
    best, rest = candidates[order[:half]], candidates[order[half:]]
    tail = rng.choice(rest, size=size - half, replace=False)
    pool: np.ndarray = np.concatenate([best, tail])
    return pool


def thompson_pick(
    pool: np.ndarray,
    impressions: np.ndarray,
    clicks: np.ndarray,
    n: int,
    rng: np.random.Generator,
) -> list[int]:
    """``n`` items of ``pool`` with the highest Beta-posterior click-through draws.

    Args:
        pool: candidate item indices.
        impressions: impressions of each pool item (aggregate counters).
        clicks: clicks of each pool item (clamped to its impressions).
        n: how many to pick.
        rng: the generator of the draws.

    Returns:
        Item indices, highest draw first, at most ``n``.
    """
    pool = np.asarray(pool, dtype=np.int64)
    if n <= 0 or pool.size == 0:
        return []
    shown = np.maximum(np.asarray(impressions, dtype=np.float64), 0.0)
    hits = np.clip(np.asarray(clicks, dtype=np.float64), 0.0, shown)
    draws = rng.beta(1.0 + hits, 1.0 + shown - hits)
    n = min(n, pool.size)
    top = np.argpartition(-draws, n - 1)[:n]
    top = top[np.argsort(-draws[top], kind="stable")]
    return [int(pool[i]) for i in top]
