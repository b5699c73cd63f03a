"""Gaussian differential privacy (Dong, Roth and Su 2022): the exact curve of a Gaussian test.

A mechanism whose output, with or without one target, is ``N(mu, 1)`` against ``N(0, 1)``
(after scaling) is ``mu``-GDP, and it is ``(epsilon, delta)``-DP exactly for::

    delta(epsilon) = Phi(-epsilon / mu + mu / 2) - e^epsilon Phi(-epsilon / mu - mu / 2)

One round of the Gaussian mechanism with sensitivity ``C`` and noise ``sigma C`` is
``1/sigma``-GDP; ``T`` rounds in which the target always takes part are
``sqrt(T)/sigma``-GDP. The audit uses this curve to turn the separation ``mu`` it
measures between the scores of included and excluded canaries into an epsilon
*estimate* (not a bound), which can be set beside the accountant's epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedpers.privacy.errors import ConfigError, DataError

__all__ = ["gaussian_delta", "gaussian_epsilon", "separation"]

_EPSILON_CEILING = 200.0
_BISECTION_STEPS = 100


def _phi(x: float) -> float:
    """The standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(epsilon: float, mu: float) -> float:
    """The smallest delta for which a ``mu``-GDP mechanism is ``(epsilon, delta)``-DP.

    Args:
        epsilon: >= 0.
        mu: the separation of the two Gaussians, >= 0.

    Returns:
        ``delta(epsilon)`` in ``[0, 1]``.

    Raises:
        ConfigError: on a negative argument.

    Example:
        >>> round(gaussian_delta(0.0, 1.0), 4)  # total variation of N(1,1) and N(0,1)
        0.3829
    """
    if epsilon < 0 or mu < 0:
        raise ConfigError(f"need epsilon >= 0 and mu >= 0, got {epsilon}, {mu}")
    if mu == 0:
        return 0.0
    first = _phi(-epsilon / mu + mu / 2.0)
    second = _phi(-epsilon / mu - mu / 2.0)
    if second == 0.0:
        return max(0.0, first)
    return max(0.0, first - math.exp(epsilon + math.log(second)))


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The epsilon of a ``mu``-GDP mechanism at ``delta`` (the inverse of :func:`gaussian_delta`).

    Args:
        mu: >= 0.
        delta: in ``(0, 1)``.

    Returns:
        The smallest epsilon with ``gaussian_delta(epsilon, mu) <= delta`` (0 when ``mu``
        is that small).

    Raises:
        ConfigError: on arguments out of range.

    Example:
        >>> round(gaussian_epsilon(1.0, 1e-5), 2)
        4.38
    """
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")
    if mu < 0 or not math.isfinite(mu):
        raise ConfigError(f"mu must be finite and >= 0, got {mu}")
    if gaussian_delta(0.0, mu) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_delta(hi, mu) > delta:
        lo, hi = hi, 2.0 * hi
        if hi > _EPSILON_CEILING:
            return _EPSILON_CEILING
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if gaussian_delta(mid, mu) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def separation(
    scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray
) -> float:
    """The measured ``mu``: difference of the class means over the excluded scores' spread.

    Args:
        scores: attack score per canary.
        included: whether each canary took part.

    Returns:
        ``(mean(included) - mean(excluded)) / std(excluded)``, at least 0.

    Raises:
        DataError: when a class has fewer than two canaries or the spread is 0.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inc = np.asarray(included, dtype=bool).reshape(-1)
    if s.shape != inc.shape:
        raise DataError(f"{s.size} scores but {inc.size} inclusion flags")
    if inc.sum() < 2 or (~inc).sum() < 2:
        raise DataError("the separation needs at least two included and two excluded canaries")
    spread = float(np.std(s[~inc], ddof=1))
    if not spread > 0:
        raise DataError("the excluded canaries' scores do not vary")
    return max(0.0, float(np.mean(s[inc]) - np.mean(s[~inc])) / spread)
