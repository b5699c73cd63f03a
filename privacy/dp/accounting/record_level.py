"""Record-level DP of a device's DP-SGD: its rounds composed into one epsilon."""

from __future__ import annotations

from collections.abc import Sequence

from fedpers.privacy.dp.accounting.analysis import epsilon_from_history
from fedpers.privacy.dp.accounting.events import AccountantName, RecordLevelRound, RoundEvent

__all__ = ["record_level_epsilon", "record_level_would_exceed"]


def record_level_epsilon(
    history: Sequence[RecordLevelRound | tuple[float, float, int]],
    delta: float,
    accountant: AccountantName = "rdp",
) -> float:
    """Composed record-level epsilon of a device's DP-SGD rounds.

    Every DP-SGD step is a Poisson-subsampled Gaussian mechanism over the device's
    examples; the rounds compose.

    Args:
        history: ``(noise_multiplier, sample_rate, steps)`` per round, as persisted in the
            device's ledger.
        delta: the record-level delta.
        accountant: ``"rdp"`` (default) or ``"prv"``.

    Returns:
        The epsilon (``inf`` when a round ran without noise, 0 for no rounds).

    Raises:
        ConfigError: on invalid entries.
        PrivacyAccountingError: when the accountant fails.
    """
    events = [
        RoundEvent.poisson(float(sigma), float(rate), int(steps))
        for sigma, rate, steps in history
        if int(steps) > 0
    ]
    return epsilon_from_history(events, delta, accountant).epsilon


def record_level_would_exceed(
    history: Sequence[RecordLevelRound | tuple[float, float, int]],
    next_round: RecordLevelRound | tuple[float, float, int],
    delta: float,
    budget: float,
) -> bool:
    """Whether running ``next_round`` after ``history`` would push epsilon above ``budget``."""
    return record_level_epsilon([*history, next_round], delta) > budget
