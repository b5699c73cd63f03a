"""One-run privacy auditing (Steinke, Nasr and Jagielski, NeurIPS 2023).

``m`` canaries are each included in the training input independently with probability
1/2. After a *single* training run the auditor scores every canary, guesses "included"
for the ``k`` highest scores and "excluded" for the ``k`` lowest, and abstains on the
rest: ``r = 2k`` guesses of which ``v`` are correct. For an (epsilon, delta)-DP algorithm
the number of correct guesses is dominated by randomized response with accuracy
``e^epsilon / (1 + e^epsilon)``, up to a term in delta (their Theorem 3)::

    P[W >= v] <= P[Binomial(r, p_eps) >= v]
                 + 2 m delta * max_{1 <= i <= v} P[v - i <= Binomial(r, p_eps) < v] / i

That right-hand side is a p-value for the hypothesis "the algorithm is (epsilon, delta)-DP".
The empirical lower bound is the largest epsilon whose hypothesis is rejected at the
requested confidence. When several ``k`` are tried, the error probability is split
equally between them (Bonferroni), so the reported maximum keeps its confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpers.privacy.audit.stats import binomial_log_pmf, scores_with_flags
from fedpers.privacy.errors import ConfigError

__all__ = [
    "OneRunAudit",
    "OneRunGuess",
    "one_run_epsilon_from_counts",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
]

_EPSILON_CEILING = 60.0
_BISECTION_STEPS = 60


@dataclass(frozen=True)
class OneRunGuess:
    """The outcome of guessing on the top and bottom ``k`` canaries.

    Attributes:
        k: guesses "included" on the ``k`` highest and "excluded" on the ``k`` lowest scores.
        guesses: ``r = 2k``.
        correct: ``v``, how many of the guesses were right.
        epsilon: the epsilon lower bound from this ``k`` alone at the (Bonferroni-split)
            level used for the whole audit.
    """

    k: int
    guesses: int
    correct: int
    epsilon: float


@dataclass(frozen=True)
class OneRunAudit:
    """The result of a one-run audit.

    Attributes:
        epsilon: the largest epsilon rejected at ``confidence`` (0 when none is).
        delta: the delta the bound is stated for.
        confidence: joint confidence over every ``k`` tried.
        canaries: ``m``.
        included: how many canaries were included.
        best: the guess that gave :attr:`epsilon` (the first ``k`` on ties).
        per_k: one entry per ``k`` tried, in the order given.
    """

    epsilon: float
    delta: float
    confidence: float
    canaries: int
    included: int
    best: OneRunGuess
    per_k: tuple[OneRunGuess, ...]


def _log_rr_accuracy(epsilon: float) -> tuple[float, float]:
    """``(log p, log(1 - p))`` for ``p = e^eps / (1 + e^eps)``, stable at any epsilon."""
    return -math.log1p(math.exp(-epsilon)), -(epsilon + math.log1p(math.exp(-epsilon)))


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of "(epsilon, delta)-DP" after ``v`` correct out of ``r`` guesses on ``m`` canaries.

    Args:
        m: number of canaries.
        r: number of guesses (the rest abstain), ``0 <= r <= m``.
        v: number of correct guesses, ``0 <= v <= r``.
        epsilon: hypothesised epsilon, >= 0.
        delta: hypothesised delta, in ``[0, 1]``.

    Returns:
        An upper bound on ``P[W >= v]`` under the hypothesis, clipped to 1.

    Raises:
        ConfigError: when the arguments are out of range.

    Example:
        >>> round(one_run_p_value(10, 10, 10, 0.0, 0.0), 6)  # ten right coin flips
        0.000977
    """
    if not 0 <= v <= r <= m:
        raise ConfigError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0.0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon}")
    if not 0.0 <= delta <= 1.0:
        raise ConfigError(f"delta must be in [0, 1], got {delta}")
    if v == 0:
        return 1.0
    pmf = np.exp(binomial_log_pmf(r, *_log_rr_accuracy(epsilon)))
    tail = float(pmf[v:].sum())
    # P[v - i <= W' < v] for i = 1..v, divided by i
    below = np.cumsum(pmf[:v][::-1]) / np.arange(1, v + 1)
    return min(1.0, tail + 2.0 * m * delta * float(below.max()))


def one_run_epsilon_from_counts(
    m: int, r: int, v: int, delta: float, confidence: float = 0.95
) -> float:
    """The largest epsilon whose (epsilon, delta)-DP hypothesis is rejected at ``confidence``.

    Args:
        m: number of canaries.
        r: number of guesses.
        v: number of correct guesses.
        delta: the delta of the hypothesis.
        confidence: ``1 -`` the significance level of the test.

    Returns:
        The epsilon lower bound (0 when even epsilon = 0 is not rejected).

    Raises:
        ConfigError: when the arguments are out of range.

    Example:
        >>> round(one_run_epsilon_from_counts(1000, 100, 100, 0.0), 2)
        3.49
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    if one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < alpha:
        lo, hi = hi, 2.0 * hi
        if hi > _EPSILON_CEILING:
            return _EPSILON_CEILING
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if one_run_p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_epsilon_lower_bound(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    delta: float,
    k_values: Sequence[int],
    confidence: float = 0.95,
) -> OneRunAudit:
    """Empirical epsilon lower bound of one training run from canary scores.

    For each ``k`` the auditor guesses "included" on the ``k`` highest scores and
    "excluded" on the ``k`` lowest (ties broken by canary order, which is independent of
    inclusion), abstaining on the rest. Each ``k`` is tested at level
    ``(1 - confidence) / len(k_values)``; the maximum over ``k`` is returned.

    Args:
        scores: attack score per canary (higher means "included").
        included: whether each canary was actually included (each with probability 1/2).
        delta: the delta of the audited guarantee.
        k_values: guesses per side to try; each needs ``2k <= m``.
        confidence: joint confidence of the returned bound.

    Returns:
        The audit result; ``epsilon`` is its headline.

    Raises:
        DataError: when scores and inclusion flags differ in length or a score is not finite.
        ConfigError: when ``k_values`` is empty or a ``k`` is out of range.

    Example:
        >>> audit = one_run_epsilon_lower_bound(
        ...     np.arange(1000.0), np.arange(1000) >= 500, 0.0, [50]
        ... )
        >>> round(audit.epsilon, 2)
        3.49
    """
    s, inc = scores_with_flags(scores, included, scores_of="canary", flags_are="inclusion flags")
    m = int(s.size)
    if not k_values:
        raise ConfigError("k_values must not be empty")
    for k in k_values:
        if k < 1 or 2 * k > m:
            raise ConfigError(f"k={k} needs 1 <= k <= m/2 = {m // 2}")
    level = 1.0 - (1.0 - confidence) / len(k_values)
    order = np.argsort(-s, kind="stable")
    results = []
    for k in k_values:
        top, bottom = order[:k], order[m - k :]
        correct = int(inc[top].sum() + (~inc[bottom]).sum())
        eps = one_run_epsilon_from_counts(m, 2 * k, correct, delta, level)
        results.append(OneRunGuess(k=int(k), guesses=2 * int(k), correct=correct, epsilon=eps))
    best = max(results, key=lambda g: g.epsilon)
    return OneRunAudit(
        epsilon=best.epsilon,
        delta=float(delta),
        confidence=float(confidence),
        canaries=m,
        included=int(inc.sum()),
        best=best,
        per_k=tuple(results),
    )
