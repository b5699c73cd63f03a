"""A run's user-level privacy ledger: budget checks before a round, records after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedpers.privacy.dp.accounting.accountants import UserLevelAccountant, create_accountant
from fedpers.privacy.dp.accounting.analysis import cross_check_history, epsilon_from_history
from fedpers.privacy.dp.accounting.events import (
    AccountantName,
    CrossCheck,
    EpsilonResult,
    RoundEvent,
    check_delta,
    merge_events,
)
from fedpers.privacy.errors import BudgetExhaustedError, ConfigError, PrivacyAccountingError

__all__ = ["PrivacyLedger"]

_STATE_VERSION = 1


@dataclass
class PrivacyLedger:
    """A run's user-level privacy ledger: delta, accountant, and the rounds it recorded.

    The coordinator asks :meth:`would_exceed` (or :meth:`check`) *before* each round and
    calls :meth:`record` after it, with exactly what happened (the noise multiplier used
    and how the round's devices were drawn). :meth:`state_dict` is JSON-able and
    :meth:`from_state_dict` restores it on resume, so epsilon is neither reset nor
    counted twice.

    Attributes:
        delta: the target delta.
        accountant: ``"rdp"`` or ``"prv"``.
    """

    delta: float
    accountant: AccountantName = "rdp"
    _accountant: UserLevelAccountant = field(init=False, repr=False)
    _cache: dict[tuple[RoundEvent, ...], EpsilonResult] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        check_delta(self.delta)
        self._accountant = create_accountant(self.accountant)

    @property
    def history(self) -> list[RoundEvent]:
        """The recorded rounds (run-length compressed; a copy)."""
        return list(self._accountant.history)

    @property
    def rounds(self) -> int:
        """Number of rounds recorded."""
        return len(self._accountant)

    def record(self, event: RoundEvent) -> None:
        """Record rounds that happened."""
        self._accountant.step(event)

    def _result(self, events: Sequence[RoundEvent]) -> EpsilonResult:
        key = tuple(merge_events(list(events)))
        if key not in self._cache:
            self._cache[key] = epsilon_from_history(key, self.delta, self.accountant)
        return self._cache[key]

    def report(self) -> EpsilonResult:
        """Epsilon so far, with its method and labels."""
        return self._result(self._accountant.history)

    def epsilon(self) -> float:
        """Epsilon so far (``inf`` when not private)."""
        return self.report().epsilon

    def epsilon_after(self, next_step: RoundEvent) -> float:
        """Epsilon the ledger would show after also recording ``next_step``."""
        return self._result([*self._accountant.history, next_step]).epsilon

    def would_exceed(self, budget: float, next_step: RoundEvent) -> bool:
        """Whether recording ``next_step`` would push epsilon above ``budget``."""
        return self.epsilon_after(next_step) > budget

    def check(self, budget: float, next_step: RoundEvent) -> None:
        """Raise before a round that would exceed the budget.

        Raises:
            BudgetExhaustedError: when :meth:`would_exceed` is true.
        """
        after = self.epsilon_after(next_step)
        if after > budget:
            raise BudgetExhaustedError(
                f"the next round would raise epsilon from {self.epsilon():.4g} to "
                f"{after:.4g}, above the budget {budget:.4g} (delta={self.delta:.3g})"
            )

    def cross_check(self) -> CrossCheck:
        """The recorded history recomputed with dp-accounting (see :func:`cross_check_history`)."""
        return cross_check_history(self._accountant.history, self.delta, self.accountant)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        return {
            "version": _STATE_VERSION,
            "delta": self.delta,
            "accountant": self._accountant.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpointed state (delta and accountant must match).

        Raises:
            PrivacyAccountingError: when the state is malformed or does not match.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise PrivacyAccountingError(f"unsupported ledger state {state!r:.200}")
        if state.get("delta") != self.delta:
            raise PrivacyAccountingError(
                f"ledger state has delta {state.get('delta')}, this ledger {self.delta}"
            )
        self._accountant.load_state_dict(state["accountant"])
        self._cache.clear()

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> PrivacyLedger:
        """A ledger rebuilt from :meth:`state_dict` output.

        Raises:
            PrivacyAccountingError: when the state is malformed.
        """
        try:
            ledger = cls(delta=float(state["delta"]), accountant=state["accountant"]["mechanism"])
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise PrivacyAccountingError(f"malformed ledger state: {exc}") from exc
        ledger.load_state_dict(state)
        return ledger
