"""``ConsentManager``: grant, withdraw and inspect consent on the device.

A thin stateful wrapper over the pure state transitions of
:class:`fedpers.privacy.consent.ConsentState` and the persistence of
:class:`fedpers.client.store.EventStore`. Every call reads the current state from the
store and writes the new one (and a consent-log entry) in one transaction, so a
withdrawal is one call and takes effect at once for every user of the store file,
other processes included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeAlias

from fedpers.client.store import ConsentLogEntry, EventStore
from fedpers.privacy.consent import ConsentState, Purpose, parse_purpose

__all__ = ["ConsentManager"]

PurposeLike: TypeAlias = Purpose | int | str
"""A purpose as a member, a TCF id (``5``), a label (``"P5"``) or a name."""


class ConsentManager:
    """Consent of the device's user, persisted in its store.

    Args:
        store: the device store that keeps consent and its log.
        clock: source of epoch seconds for the time of each change.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = tempfile.TemporaryDirectory()
        >>> store = EventStore.create(Path(folder.name) / "device.db", ["i1", "i2"])
        >>> consent = ConsentManager(store)
        >>> sorted(consent.grant("P1", "P5", Purpose.USE_PROFILES).granted)
        [<Purpose.STORE_ACCESS: 1>, <Purpose.CREATE_PROFILES: 5>, <Purpose.USE_PROFILES: 6>]
        >>> sorted(consent.withdraw(5).granted)  # profiling stops now
        [<Purpose.STORE_ACCESS: 1>, <Purpose.USE_PROFILES: 6>]
        >>> [entry.action for entry in consent.log()]
        ['grant', 'withdraw']
        >>> store.close()
        >>> folder.cleanup()
    """

    def __init__(self, store: EventStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    @property
    def state(self) -> ConsentState:
        """The current consent state, read from the store."""
        return self._store.load_consent()

    def grant(self, *purposes: PurposeLike) -> ConsentState:
        """Grant ``purposes`` (TCF ids, ``"P5"`` labels, names or members) and log it.

        Raises:
            DataError: a purpose is not one fedpers uses.
        """
        return self._change(ConsentState.granting, purposes, "grant")

    def withdraw(self, *purposes: PurposeLike) -> ConsentState:
        """Withdraw ``purposes``; effective immediately for every gate.

        Raises:
            DataError: a purpose is not one fedpers uses.
        """
        return self._change(ConsentState.withdrawing, purposes, "withdraw")

    def withdraw_all(self) -> ConsentState:
        """Withdraw every purpose in one call (GPC is left as it is)."""
        return self._change(ConsentState.withdrawing, list(Purpose), "withdraw_all")

    def _change(
        self,
        transition: Callable[[ConsentState, list[Purpose], float], ConsentState],
        purposes: Iterable[PurposeLike],
        action: str,
    ) -> ConsentState:
        """Apply ``transition`` to the stored state with ``purposes``, now, and log ``action``."""
        named = [parse_purpose(p) for p in purposes]
        at = self._clock()
        return self._store.update_consent(lambda s: transition(s, named, at), action, named)

    def set_gpc(self, enabled: bool) -> ConsentState:
        """Set or clear the Global Privacy Control signal (an opt-out of sharing)."""
        flag = bool(enabled)
        at = self._clock()
        action = "gpc_on" if flag else "gpc_off"
        return self._store.update_consent(lambda s: s.with_gpc(flag, at), action)

    def log(self) -> list[ConsentLogEntry]:
        """Every consent change recorded in the store, oldest first."""
        entries: list[ConsentLogEntry] = self._store.consent_log()
        return entries
