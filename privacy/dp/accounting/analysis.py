"""Epsilon of a history of rounds, the noise for a target epsilon, and cross-checks.

Pure functions over :class:`~fedpers.privacy.dp.accounting.events.RoundEvent` sequences;
how each sampling scheme is accounted is written in the package docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from fedpers.privacy.dp.accounting.backends import dp_accounting_epsilon, opacus_epsilon
from fedpers.privacy.dp.accounting.events import (
    ADD_OR_REMOVE,
    REPLACE_ONE,
    AccountantName,
    CrossCheck,
    EpsilonResult,
    RoundEvent,
    Sampling,
    check_accountant_name,
    check_delta,
    identical_rounds,
    merge_events,
)
from fedpers.privacy.errors import ConfigError, PrivacyAccountingError

__all__ = [
    "cross_check_epsilon",
    "cross_check_history",
    "epsilon_for",
    "epsilon_from_history",
    "solve_noise_multiplier",
]


def _classify(events: Sequence[RoundEvent]) -> tuple[list[RoundEvent], str, str]:
    """Drop no-cost events; return (events, adjacency, sampling label)."""
    active = [e for e in events if e.kind != "none"]
    kinds = {e.kind for e in active}
    if "wor" in kinds and "poisson" in kinds:
        raise PrivacyAccountingError(
            "cannot compose Poisson-sampled rounds (add/remove adjacency) with fixed-size "
            "cohort rounds (replace-one adjacency) in one history"
        )
    if "wor" in kinds:
        return active, REPLACE_ONE, "fixed"
    return active, ADD_OR_REMOVE, "poisson" if "poisson" in kinds else "none"


def epsilon_from_history(
    events: Sequence[RoundEvent], delta: float, accountant: AccountantName = "rdp"
) -> EpsilonResult:
    """Epsilon spent by a sequence of rounds (the package docstring says how).

    Args:
        events: the rounds, in any order (composition is commutative).
        delta: the target delta.
        accountant: ``"rdp"`` (reported figure) or ``"prv"``.

    Returns:
        The :class:`EpsilonResult`; ``epsilon = inf, private = False`` when any round
        with a non-zero sample rate had ``sigma = 0``; ``epsilon = 0`` for no rounds.

    Raises:
        ConfigError: on an invalid delta or accountant name.
        PrivacyAccountingError: when the history mixes Poisson and fixed-cohort rounds,
            when PRV is asked for fixed cohorts, or when the underlying library fails.
    """
    check_delta(delta)
    check_accountant_name(accountant)
    merged = merge_events(list(events))
    rounds = sum(e.count for e in merged)
    active, adjacency, sampling = _classify(merged)
    if any(e.noise_multiplier == 0 for e in active):
        return EpsilonResult(
            math.inf,
            delta,
            False,
            "none",
            adjacency,
            sampling,
            rounds,
            "non-private: at least one round added no noise",
        )
    if not active:
        return EpsilonResult(
            0.0, delta, True, "none", adjacency, sampling, rounds, "no round released data"
        )
    if adjacency == REPLACE_ONE:
        if accountant != "rdp":
            raise PrivacyAccountingError(
                "fixed-size cohorts (sampling without replacement) are accounted with the "
                "RDP accountant only; use accountant='rdp' or Poisson sampling"
            )
        epsilon = dp_accounting_epsilon(active, delta, REPLACE_ONE, "rdp")
        method = (
            "dp-accounting RDP, SampledWithoutReplacementDpEvent (Wang-Balle-Kasiviswanathan "
            "2019) under replace-one adjacency, Gaussian noise multiplier sigma/2 "
            "(sensitivity 2C)"
        )
        return EpsilonResult(
            epsilon, delta, True, "dp_accounting.rdp", adjacency, sampling, rounds, method
        )
    epsilon = opacus_epsilon(active, delta, accountant)
    method = (
        f"Opacus {accountant.upper()} accountant, "
        + (
            "Poisson-subsampled Gaussian"
            if sampling == "poisson"
            else "Gaussian mechanism without sampling"
        )
        + " under add/remove-one adjacency (sensitivity C)"
    )
    return EpsilonResult(
        epsilon, delta, True, f"opacus.{accountant}", adjacency, sampling, rounds, method
    )


def epsilon_for(
    noise_multiplier: float,
    sample_rate: float | None,
    rounds: int,
    delta: float,
    *,
    sampling: Sampling = "poisson",
    population: int | None = None,
    cohort: int | None = None,
    accountant: AccountantName = "rdp",
) -> EpsilonResult:
    """Epsilon after ``rounds`` identical rounds.

    Args:
        noise_multiplier: ``sigma`` (0: non-private, epsilon inf).
        sample_rate: ``q`` for Poisson sampling (1: every device every round); for fixed
            cohorts ``None`` or ``cohort / population``.
        rounds: number of rounds (>= 1).
        delta: the target delta.
        sampling: ``"poisson"`` or ``"fixed"``.
        population: ``N`` (fixed cohorts).
        cohort: ``m`` (fixed cohorts).
        accountant: ``"rdp"`` or ``"prv"`` (Poisson only).

    Returns:
        The :class:`EpsilonResult`.

    Raises:
        ConfigError: on inconsistent arguments.
        PrivacyAccountingError: when the accountant cannot compute it.

    Example:
        >>> round(epsilon_for(1.0, 0.01, 1000, 1e-5).epsilon, 2)
        2.1
    """
    event = identical_rounds(noise_multiplier, sample_rate, rounds, sampling, population, cohort)
    return epsilon_from_history([event], delta, accountant)


def solve_noise_multiplier(
    target_epsilon: float,
    sample_rate: float | None,
    rounds: int,
    delta: float,
    *,
    sampling: Sampling = "poisson",
    population: int | None = None,
    cohort: int | None = None,
    accountant: AccountantName = "rdp",
    tolerance: float = 1e-3,
    max_noise_multiplier: float = 1e4,
) -> float:
    """The smallest noise multiplier whose epsilon after ``rounds`` is at most the target.

    Bisection on ``sigma`` (epsilon is non-increasing in ``sigma``); the returned value
    always satisfies ``epsilon_for(sigma, ...) <= target_epsilon`` and is within a relative
    ``tolerance`` of the smallest such ``sigma``.

    Args:
        target_epsilon: the budget (positive, finite).
        sample_rate: as in :func:`epsilon_for`.
        rounds: number of rounds.
        delta: the target delta.
        sampling: as in :func:`epsilon_for`.
        population: as in :func:`epsilon_for`.
        cohort: as in :func:`epsilon_for`.
        accountant: as in :func:`epsilon_for`.
        tolerance: relative precision of the bisection.
        max_noise_multiplier: give up above this ``sigma``.

    Returns:
        The noise multiplier.

    Raises:
        ConfigError: on a non-positive or infinite target, or inconsistent arguments.
        PrivacyAccountingError: when no ``sigma <= max_noise_multiplier`` reaches the target.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"target_epsilon must be positive and finite, got {target_epsilon}")
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance must be in (0, 1), got {tolerance}")

    def eps(sigma: float) -> float:
        try:
            return epsilon_for(
                sigma,
                sample_rate,
                rounds,
                delta,
                sampling=sampling,
                population=population,
                cohort=cohort,
                accountant=accountant,
            ).epsilon
        except PrivacyAccountingError:
            return math.inf  # numerically hopeless at this sigma: treat as too little noise

    high = 1.0
    if eps(high) <= target_epsilon:
        low = high / 2
        while eps(low) <= target_epsilon:
            high = low
            low /= 2
            if low < 1e-4:
                return high
    else:
        low = high
        high *= 2
        while eps(high) > target_epsilon:
            low = high
            high *= 2
            if high > max_noise_multiplier:
                raise PrivacyAccountingError(
                    f"no noise multiplier <= {max_noise_multiplier} reaches epsilon "
                    f"{target_epsilon} (rounds={rounds}, delta={delta})"
                )
    while (high - low) / high > tolerance:
        middle = (low + high) / 2
        if eps(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return high


def cross_check_history(
    events: Sequence[RoundEvent], delta: float, accountant: AccountantName = "rdp"
) -> CrossCheck:
    """Recompute a history's epsilon with Google's dp-accounting, beside the reported one.

    The reference is dp-accounting's RDP accountant for ``accountant="rdp"`` and its PLD
    accountant for ``"prv"`` (both numerical, tight accountants), for the same events
    and adjacency.

    Args:
        events: the recorded rounds.
        delta: the target delta.
        accountant: the reporting accountant.

    Returns:
        The :class:`CrossCheck`.

    Raises:
        PrivacyAccountingError: for fixed-size cohorts, whose figure already comes from
            dp-accounting (no second library implements sampling without replacement),
            and when either library fails.
    """
    reported = epsilon_from_history(events, delta, accountant)
    if reported.adjacency == REPLACE_ONE:
        raise PrivacyAccountingError(
            "fixed-size cohorts are accounted by dp-accounting itself; no second library "
            "implements sampling without replacement for a cross-check"
        )
    if not reported.private or reported.accountant == "none":
        return CrossCheck(
            reported.epsilon, reported.epsilon, 0.0, reported.accountant, reported.accountant
        )
    active, adjacency, _ = _classify(merge_events(list(events)))
    kind: Literal["rdp", "pld"] = "rdp" if accountant == "rdp" else "pld"
    reference = dp_accounting_epsilon(active, delta, adjacency, kind)
    difference = abs(reported.epsilon - reference) / reference if reference > 0 else 0.0
    return CrossCheck(
        reported.epsilon, reference, difference, reported.accountant, f"dp_accounting.{kind}"
    )


def cross_check_epsilon(
    noise_multiplier: float,
    sample_rate: float | None,
    rounds: int,
    delta: float,
    *,
    sampling: Sampling = "poisson",
    population: int | None = None,
    cohort: int | None = None,
    accountant: AccountantName = "rdp",
) -> CrossCheck:
    """:func:`cross_check_history` for ``rounds`` identical rounds (see :func:`epsilon_for`)."""
    event = identical_rounds(noise_multiplier, sample_rate, rounds, sampling, population, cohort)
    return cross_check_history([event], delta, accountant)
