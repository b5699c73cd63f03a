"""Stateful user-level accountants: they record rounds and ask the pure functions.

Like Opacus's accountants they only keep history; :func:`create_accountant` picks one
from the :data:`ACCOUNTANTS` registry by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fedpers.privacy.dp.accounting.analysis import epsilon_from_history
from fedpers.privacy.dp.accounting.events import (
    AccountantName,
    EpsilonResult,
    RoundEvent,
    check_accountant_name,
    merge_events,
)
from fedpers.privacy.errors import PrivacyAccountingError

__all__ = [
    "ACCOUNTANTS",
    "PRVUserLevelAccountant",
    "RDPUserLevelAccountant",
    "UserLevelAccountant",
    "create_accountant",
]


class UserLevelAccountant:
    """Records user-level rounds; computes epsilon with :mod:`.analysis`.

    Like Opacus's accountants it only keeps history (run-length compressed); subclasses
    differ in the accountant they ask for. Create with :func:`create_accountant`.
    """

    mechanism: ClassVar[AccountantName] = "rdp"

    def __init__(self) -> None:
        self.history: list[RoundEvent] = []

    def step(self, event: RoundEvent) -> None:
        """Record ``event`` (merged with the previous entry when it is the same mechanism)."""
        self.history[-1:] = merge_events([*self.history[-1:], event])

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far (``inf`` when a round was not private)."""
        return self.report(delta).epsilon

    def report(self, delta: float) -> EpsilonResult:
        """The full :class:`EpsilonResult` for the history so far."""
        return epsilon_from_history(self.history, delta, self.mechanism)

    def __len__(self) -> int:
        """Number of rounds recorded."""
        return sum(e.count for e in self.history)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: mechanism and history."""
        return {"mechanism": self.mechanism, "history": [e.to_dict() for e in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the history with a saved one.

        Raises:
            PrivacyAccountingError: when the state is malformed or of another mechanism.
        """
        if not isinstance(state, Mapping) or "history" not in state:
            raise PrivacyAccountingError("accountant state has no 'history'")
        if state.get("mechanism") != self.mechanism:
            raise PrivacyAccountingError(
                f"state of a {state.get('mechanism')!r} accountant cannot be loaded into "
                f"a {self.mechanism!r} accountant"
            )
        self.history = [RoundEvent.from_dict(e) for e in state["history"]]


class RDPUserLevelAccountant(UserLevelAccountant):
    """Reports with the RDP accountant (Opacus; dp-accounting for fixed cohorts)."""

    mechanism: ClassVar[AccountantName] = "rdp"


class PRVUserLevelAccountant(UserLevelAccountant):
    """Reports with Opacus's PRV accountant (Poisson sampling and no sampling only)."""

    mechanism: ClassVar[AccountantName] = "prv"


ACCOUNTANTS: dict[str, type[UserLevelAccountant]] = {
    "rdp": RDPUserLevelAccountant,
    "prv": PRVUserLevelAccountant,
}
"""The accountant registry used by :func:`create_accountant`."""


def create_accountant(name: str) -> UserLevelAccountant:
    """A fresh accountant by name: ``"rdp"`` or ``"prv"``.

    Raises:
        ConfigError: for an unknown name.
    """
    check_accountant_name(name)
    return ACCOUNTANTS[name]()
