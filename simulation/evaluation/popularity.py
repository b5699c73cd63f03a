"""The popularity baseline: every user gets the catalogue ordered by interaction count.

It is the non-personalised floor every personalised model (and every private one) must
beat: issue 4 requires the federation never to publish a model worse than it. Counts
come from what a model evaluated on ``target`` may learn from
(:meth:`~fedpers.simulation.evaluation.protocol.LeaveOneOutSplit.history`): the training
interactions for ``"valid"``, plus the validation items for ``"test"``.
"""

from __future__ import annotations

import numpy as np

from fedpers.simulation.evaluation.protocol import LeaveOneOutSplit, Scorer, Target

__all__ = ["popularity_counts", "popularity_scorer"]


def popularity_counts(split: LeaveOneOutSplit, target: Target = "test") -> np.ndarray:
    """``float64[n_items]``: how many users interacted with each item in the history.

    Args:
        split: the leave-one-out split.
        target: which held-out item the counts are used to predict.

    Returns:
        The interaction count of each item.
    """
    _, items = split.history(target)
    return np.bincount(items, minlength=split.n_items).astype(np.float64)


def popularity_scorer(split: LeaveOneOutSplit, target: Target = "test") -> Scorer:
    """A scorer that gives every user the item counts of :func:`popularity_counts`.

    Args:
        split: the leave-one-out split.
        target: which held-out item it will be evaluated on.

    Returns:
        ``scorer(users) -> float[len(users), n_items]`` (identical rows).

    Example:
        >>> from fedpers.simulation.data import SyntheticConfig, generate_synthetic
        >>> from fedpers.simulation.evaluation.protocol import evaluate, leave_one_out
        >>> data = generate_synthetic(SyntheticConfig(n_users=100, n_items=50, seed=1))
        >>> split = leave_one_out(data)
        >>> popularity_scorer(split)(np.array([0, 1])).shape  # one row per user
        (2, 50)
        >>> round(evaluate(popularity_scorer(split), split).hr10_full, 2)
        0.69
    """
    counts = popularity_counts(split, target)

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), len(counts)))

    return score
