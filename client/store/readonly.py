"""A device store opened read-only: for the auditor, who may look but never write.

:class:`~fedpers.client.store.EventStore` opens a store to use it: it switches the file
to WAL mode, migrates older schemas and checkpoints. An auditor must leave every file of
a run as it found it, so :class:`ReadOnlyStore` opens the SQLite file with ``mode=ro``
(or ``immutable=1`` when a read-only folder keeps SQLite from reading the WAL), never
migrates, and reads older schemas as they are: a store without a ``ledger`` or
``personal_state`` table simply has no ledger or personal state.

Example:
    >>> import tempfile
    >>> from fedpers.client.consent import ConsentManager
    >>> from fedpers.client.store import EventStore
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "device.db"
    >>> with EventStore.create(path, ["i1", "i2"]) as device:
    ...     _ = ConsentManager(device).grant("P1")
    >>> with ReadOnlyStore.open(path) as store:
    ...     store.consent(), store.epsilon_spent()
    (ConsentState(granted=frozenset({<Purpose.STORE_ACCESS: 1>}), ...), None)
    >>> folder.cleanup()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fedpers.client.store.consent import read_consent, read_consent_log
from fedpers.client.store.event_log import read_history_indices
from fedpers.client.store.ledger import read_ledger
from fedpers.client.store.profile import read_personal_state, read_user_vector
from fedpers.client.store.records import ConsentLogEntry
from fedpers.privacy.consent import ConsentState
from fedpers.privacy.errors import StoreError

__all__ = ["REQUIRED_TABLES", "ReadOnlyStore", "connect_readonly"]

REQUIRED_TABLES = frozenset({"events", "catalogue", "consent", "consent_log", "meta"})
"""Tables every schema version of a device store has."""

_T = TypeVar("_T")


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to any SQLite file (``mode=ro``; ``immutable`` as a fallback).

    The caller closes it.

    Raises:
        StoreError: when the file is missing or is not a readable SQLite database.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such SQLite file")
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        try:
            # a WAL file in a read-only folder: read the main file as it is
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open read-only ({exc})") from exc
    return conn


class ReadOnlyStore(AbstractContextManager["ReadOnlyStore"]):
    """One device store, read without changing a byte of it.

    Every read raises :class:`StoreError` naming the file when the store cannot be read.
    The reads are the store's own (the functions :class:`~fedpers.client.store.EventStore`
    delegates to), on a read-only connection.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        """Wrap an open read-only connection; use :meth:`open` instead."""
        self._path = path
        self._conn = conn
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        self._tables = frozenset(str(r[0]) for r in rows)

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    @property
    def tables(self) -> frozenset[str]:
        """The tables the file holds (older schemas hold fewer)."""
        return self._tables

    @classmethod
    def open(cls, path: str | Path) -> ReadOnlyStore:
        """Open the store at ``path`` read-only.

        Raises:
            StoreError: the file is missing, not SQLite, or not a fedpers device store.
        """
        target = Path(path)
        conn = connect_readonly(target)
        try:
            store = cls(target, conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{target}: unreadable device store ({exc})") from exc
        if not store.tables >= REQUIRED_TABLES:
            conn.close()
            raise StoreError(
                f"{target}: not a fedpers device store (tables {sorted(store.tables)})"
            )
        return store

    def close(self) -> None:
        """Close the connection (closing twice is fine)."""
        self._conn.close()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, what: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return what(self._conn)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise StoreError(f"{self._path}: unreadable device store ({exc})") from exc

    def history_indices(self) -> np.ndarray:
        """Catalogue indices of the events' items in time order (``int64``).

        Events whose item left the current model are skipped.
        """
        return self._read(read_history_indices)

    def consent(self) -> ConsentState | None:
        """The current consent, ``None`` when the user never decided."""

        def read(conn: sqlite3.Connection) -> ConsentState | None:
            if conn.execute("SELECT 1 FROM consent WHERE id = 1").fetchone() is None:
                return None
            return read_consent(conn, self._path)

        return self._read(read)

    def consent_log(self) -> list[ConsentLogEntry]:
        """Every consent change, oldest first."""
        return self._read(read_consent_log)

    def epsilon_spent(self) -> float | None:
        """Record-level epsilon of the ledger's last entry, ``None`` without one."""
        if "ledger" not in self._tables:
            return None
        entries = self._read(read_ledger)
        return entries[-1].epsilon if entries else None

    def has_personal_state(self) -> bool:
        """Whether the store holds a personal-state row (user vector or personal head)."""
        if "personal_state" not in self._tables:
            return False
        return self._read(read_personal_state) is not None

    def user_vector(self) -> np.ndarray | None:
        """The private user vector (``float32``), ``None`` when none is stored."""
        if "personal_state" not in self._tables:
            return None
        return self._read(lambda conn: read_user_vector(conn, self._path))

    def meta(self) -> dict[str, Any]:
        """The store's ``meta`` table (format, creation, ``erased_at`` where recorded)."""
        return self._read(lambda conn: dict(conn.execute("SELECT key, value FROM meta").fetchall()))
