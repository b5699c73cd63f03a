"""``EventStore``: the device's single SQLite file, through sqlite-utils.

One file per device holds the catalogue of item ids known to the device, its events,
its consent state and consent log, the private personal state (user vector, optional
personal head) and the record-level privacy ledger. Raw events leave the store only
through :meth:`EventStore.export`, the owner's copy (GDPR Art. 20); every other read is
for code running on the device.

Durability: the file is in WAL mode with ``synchronous=NORMAL``. A commit appends its
pages to the ``-wal`` file with ``write()`` before :meth:`EventStore.append` returns, so
an acknowledged event is in the operating system's page cache and survives the process
being killed (SIGKILL, crash, out-of-memory). The WAL is fsynced at checkpoints rather
than per commit, so an operating-system crash or power loss can lose the last few
acknowledged transactions but cannot corrupt the file. That trade is what makes
thousands of durable single appends per second possible on modest hardware.

Privacy at the storage layer: ``secure_delete`` is on (deleted content is overwritten
with zeros), events carry no AUTOINCREMENT counter, and :meth:`EventStore.erase` deletes
every personal row, vacuums the file and truncates the WAL so that a byte scan of the
files finds no trace of an event.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from fedpers.client.store import catalogue as catalogue_table
from fedpers.client.store import event_log, ledger, profile
from fedpers.client.store.connection import check_integrity, connect, translate, write_transaction
from fedpers.client.store.consent import read_consent, read_consent_log, write_consent
from fedpers.client.store.erasure import erase_personal_data
from fedpers.client.store.events import Event
from fedpers.client.store.records import ConsentLogEntry, LedgerEntry
from fedpers.client.store.schema import (
    MIGRATION_SET,
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
    is_current,
    migrate,
)
from fedpers.privacy.consent import ConsentState, Purpose, require_record_for_profiling
from fedpers.privacy.errors import DataError, StoreCorruptedError, StoreError

__all__ = ["EXPORT_FORMAT", "STORE_FORMAT", "EventStore"]

STORE_FORMAT = "fedpers-device-store"
"""Value of ``meta.format`` that marks a SQLite file as a fedpers device store."""

EXPORT_FORMAT = "fedpers-device-export"
"""Value of ``format`` in :meth:`EventStore.export` documents."""


def _fedpers_version() -> str:
    try:
        return metadata.version("fedpers")
    except metadata.PackageNotFoundError:
        return "unknown"


class EventStore:
    """The device's local store: one SQLite file, opened with :meth:`create` or :meth:`open`.

    Every method is safe to call from several threads (one lock per store); several
    processes may open the same file (SQLite locking, 5 s busy timeout).

    Example:
        >>> import tempfile
        >>> from fedpers.client.consent import ConsentManager
        >>> from fedpers.client.store import EventType
        >>> folder = tempfile.TemporaryDirectory()
        >>> store = EventStore.create(Path(folder.name) / "device.db", ["i1", "i2", "i3"])
        >>> state = ConsentManager(store).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
        >>> sorted(state.granted)
        [<Purpose.STORE_ACCESS: 1>, <Purpose.CREATE_PROFILES: 5>]
        >>> store.append(Event("i2", EventType.CLICK, 1.0, time.time()))  # the event's id
        1
        >>> store.history()
        ['i2']
        >>> store.close()
        >>> folder.cleanup()
    """

    def __init__(self, path: Path, db: Database) -> None:
        """Wrap an already migrated database; use :meth:`create` or :meth:`open` instead."""
        self._path = path
        self._db = db
        self._lock = threading.RLock()
        self._closed = False
        self._catalogue_version: str | None = None
        self._item_ids: dict[str, int] = {}

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], catalogue: Sequence[str]) -> EventStore:
        """Create a new store file holding ``catalogue`` (item ids in model index order).

        Raises:
            StoreError: ``path`` already exists (a store is never overwritten) or cannot
                be created.
            DataError: the catalogue is empty or holds duplicate or empty ids.
        """
        target = Path(path)
        items = catalogue_table.validate_catalogue(catalogue)
        try:
            # Claim the name atomically: an empty file is a new SQLite database.
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise StoreError(f"{target}: already exists; a store is never overwritten") from None
        except OSError as exc:
            raise StoreError(f"{target}: cannot create the store: {exc}") from None
        try:
            db = connect(target)
        except sqlite3.Error as exc:
            target.unlink(missing_ok=True)
            raise translate(exc, target, "create the store") from exc
        store = cls(target, db)
        try:
            with store._op("create the store"), store._write() as conn:
                migrate(db)
                now = time.time()
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format", STORE_FORMAT),
                        ("created_at", repr(now)),
                        ("created_by", _fedpers_version()),
                        ("catalogue_version", "0"),
                    ],
                )
                catalogue_table.write_catalogue(conn, items)
        except BaseException:
            store.close()
            for suffix in ("", "-wal", "-shm"):  # it did not exist: leave nothing half-made
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            raise
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EventStore:
        """Open an existing store, upgrading its schema in place when it is older.

        Never creates, resets or repairs a file: every problem is an error naming it.

        Raises:
            StoreError: the file does not exist, is not a fedpers store, or was written
                by a newer fedpers.
            StoreCorruptedError: the file is not a readable SQLite database.
        """
        target = Path(path)
        if not target.exists():
            raise StoreError(
                f"{target}: no such store; create one with `fedpers client init {target}`"
            )
        if not target.is_file():
            raise StoreError(f"{target}: not a regular file")
        if target.stat().st_size == 0:
            raise StoreCorruptedError(
                f"{target}: the store file is empty (0 bytes), so it was truncated or never "
                "written; it was left untouched"
            )
        try:
            db = connect(target)
        except sqlite3.Error as exc:
            raise translate(exc, target, "open the store") from exc
        store = cls(target, db)
        try:
            with store._op("open the store"):
                store._check_format()
                if not is_current(db):
                    # One write transaction: concurrent openers upgrade the file exactly
                    # once, and a failed upgrade leaves the file at its old version.
                    with store._write():
                        migrate(db)
        except BaseException:
            store.close()
            raise
        return store

    def _check_format(self) -> None:
        conn = self._db.conn
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        fmt = None
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            fmt = row[0] if row else None
        if MIGRATIONS_TABLE not in tables or fmt != STORE_FORMAT:
            raise StoreError(f"{self._path}: a SQLite file, but not a fedpers device store")

    def close(self) -> None:
        """Close the file; later calls raise :class:`StoreError`. Closing twice is fine."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The store file."""
        return self._path

    @property
    def schema_version(self) -> int:
        """Number of schema migrations applied to the file."""
        with self._op("read the schema version"):
            row = self._db.conn.execute(
                f"SELECT count(*) FROM {MIGRATIONS_TABLE} WHERE migration_set = ?",
                [MIGRATION_SET],
            ).fetchone()
            return int(row[0])

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _op(self, action: str) -> Iterator[None]:
        """Hold the lock and translate sqlite3 errors into named errors."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._path}: the store is closed")
            try:
                yield
            except sqlite3.Error as exc:
                raise translate(exc, self._path, action) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed, or rolled back whole."""
        with write_transaction(self._db.conn) as conn:
            yield conn

    def _read_consent(self, conn: sqlite3.Connection) -> ConsentState:
        return read_consent(conn, self._path)

    def _item_ids_for(self, conn: sqlite3.Connection) -> dict[str, int]:
        """The catalogue's row ids by item id, re-read only when the catalogue changed."""
        version = catalogue_table.catalogue_version(conn)
        if version != self._catalogue_version:
            self._item_ids = catalogue_table.read_item_ids(conn)
            self._catalogue_version = version
        return self._item_ids

    # -- catalogue -----------------------------------------------------------------------

    def catalogue(self) -> list[str]:
        """Item ids of the current global model, in model index order."""
        with self._op("read the catalogue"):
            return catalogue_table.read_catalogue(self._db.conn)

    def set_catalogue(self, items: Sequence[str]) -> None:
        """Replace the catalogue with the item order of a new global model.

        Events keep referring to their items; an item the new model dropped stays known
        to those events (so :meth:`history` still names it) but leaves
        :meth:`history_indices` and can no longer be appended.

        Raises:
            DataError: the catalogue is empty or holds duplicate or empty ids.
        """
        catalogue = catalogue_table.validate_catalogue(items)
        with self._op("update the catalogue"), self._write() as conn:
            catalogue_table.write_catalogue(conn, catalogue)
            self._catalogue_version = None

    # -- events --------------------------------------------------------------------------

    def append(self, event: Event) -> int:
        """Store one event in its own committed transaction and return its id.

        When this returns, the event survives the process being killed.

        Raises:
            ConsentError: P1 and P5 are not both granted; nothing is stored.
            DataError: the event's item is not in the catalogue; nothing is stored.
        """
        with self._op("append an event"), self._write() as conn:
            require_record_for_profiling(self._read_consent(conn))
            return event_log.insert_event(conn, self._item_ids_for(conn), event)

    def append_many(self, events: Iterable[Event]) -> int:
        """Store many events in one transaction, all or nothing; return how many.

        Raises:
            ConsentError: P1 and P5 are not both granted; nothing is stored.
            DataError: an event is invalid; the message names its 0-based index and
                nothing is stored.
        """
        with self._op("append events"), self._write() as conn:
            require_record_for_profiling(self._read_consent(conn))
            return event_log.insert_events(conn, self._item_ids_for(conn), events)

    def recent(self, limit: int = 50) -> list[Event]:
        """The ``limit`` most recent events, oldest first (ties broken by arrival).

        Raises:
            DataError: ``limit`` is negative.
        """
        if limit < 0:
            raise DataError(f"limit must be >= 0, got {limit}")
        with self._op("read recent events"):
            events = event_log.select_events(
                self._db.conn, "ORDER BY e.timestamp DESC, e.id DESC LIMIT ?", [limit]
            )
        events.reverse()
        return events

    def history(self) -> list[str]:
        """Item ids of every stored event, in time order."""
        with self._op("read the history"):
            return event_log.read_history(self._db.conn)

    def history_indices(self) -> np.ndarray:
        """Catalogue indices of the stored events' items in time order, as int64.

        Events whose item left the current model are skipped.
        """
        with self._op("read the history"):
            return event_log.read_history_indices(self._db.conn)

    def count(self) -> int:
        """Number of stored events."""
        with self._op("count events"):
            return int(self._db.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def purge_older_than(self, cutoff_ts: float) -> int:
        """Delete events with a timestamp before ``cutoff_ts`` (retention TTL); return how many.

        Raises:
            DataError: ``cutoff_ts`` is not a finite number.
        """
        with self._op("purge old events"), self._write() as conn:
            return event_log.purge_before(conn, cutoff_ts)

    # -- consent -------------------------------------------------------------------------

    def load_consent(self) -> ConsentState:
        """The current consent state (nothing granted, GPC unset when never decided)."""
        with self._op("read consent"):
            return self._read_consent(self._db.conn)

    def save_consent(
        self, state: ConsentState, action: str, purposes: Iterable[Purpose] = ()
    ) -> None:
        """Make ``state`` current and log the change, in one transaction.

        Args:
            state: the new consent state; its ``updated_at`` is the log entry's time.
            action: what was done, e.g. ``"grant"``, ``"withdraw"``, ``"gpc_on"``.
            purposes: the purposes the action named.

        Raises:
            DataError: ``action`` is empty or ``state`` is not a :class:`ConsentState`.
        """
        self.update_consent(lambda _: state, action, purposes)

    def update_consent(
        self,
        change: Callable[[ConsentState], ConsentState],
        action: str,
        purposes: Iterable[Purpose] = (),
    ) -> ConsentState:
        """Read, change and save consent in one transaction; return the new state.

        Two processes changing consent at once cannot lose each other's change.

        Args:
            change: pure function from the current state to the new one.
            action: what was done, e.g. ``"grant"``, ``"withdraw"``, ``"gpc_on"``.
            purposes: the purposes the action named.

        Raises:
            DataError: ``action`` is empty or ``change`` returned no :class:`ConsentState`.
        """
        if not isinstance(action, str) or not action:
            raise DataError("a consent change needs a non-empty action name")
        named = list(purposes)
        with self._op("save consent"), self._write() as conn:
            state = change(self._read_consent(conn))
            if not isinstance(state, ConsentState):
                raise DataError(f"expected a ConsentState, got {type(state).__name__}")
            write_consent(conn, state, action, named)
        return state

    def consent_log(self) -> list[ConsentLogEntry]:
        """Every consent change, oldest first."""
        with self._op("read the consent log"):
            return read_consent_log(self._db.conn)

    # -- personal state ------------------------------------------------------------------

    def load_user_vector(self) -> np.ndarray | None:
        """The private user vector (float32), or ``None`` when none was saved."""
        with self._op("read the user vector"):
            return profile.read_user_vector(self._db.conn, self._path)

    def save_user_vector(self, vec: Any) -> None:
        """Replace the private user vector (stored as float32).

        Building the profile is profiling, so P1 and P5 must be granted.

        Raises:
            ConsentError: P1 and P5 are not both granted; nothing is stored.
            DataError: ``vec`` is not a finite, non-empty 1-D numeric array.
        """
        array = profile.as_user_vector(vec)
        with self._op("save the user vector"), self._write() as conn:
            require_record_for_profiling(self._read_consent(conn))
            profile.write_user_vector(conn, array)

    def load_personal_head(self) -> bytes | None:
        """The serialised personal head, or ``None`` when none was saved."""
        with self._op("read the personal head"):
            return profile.read_personal_head(self._db.conn)

    def save_personal_head(self, blob: bytes) -> None:
        """Replace the serialised personal head (opaque bytes, e.g. a torch state dict).

        Raises:
            ConsentError: P1 and P5 are not both granted; nothing is stored.
            DataError: ``blob`` is not bytes.
        """
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise DataError(f"the personal head is stored as bytes, got {type(blob).__name__}")
        with self._op("save the personal head"), self._write() as conn:
            require_record_for_profiling(self._read_consent(conn))
            profile.write_personal_head(conn, blob)

    # -- privacy ledger ------------------------------------------------------------------

    def append_ledger(self, entry: LedgerEntry) -> None:
        """Record one round of the privacy ledger.

        Raises:
            StoreError: the ledger already holds an entry for ``entry.round``.
            DataError: ``entry`` is not a :class:`LedgerEntry`.
        """
        with self._op("append to the privacy ledger"), self._write() as conn:
            ledger.insert_ledger_entry(conn, self._path, entry)

    def ledger(self) -> list[LedgerEntry]:
        """Every ledger entry, by round."""
        with self._op("read the privacy ledger"):
            return ledger.read_ledger(self._db.conn)

    def epsilon_spent(self) -> float:
        """Record-level epsilon spent so far: the last entry's composed epsilon, else 0."""
        with self._op("read the privacy ledger"):
            return ledger.read_epsilon_spent(self._db.conn)

    # -- owner's rights ------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Everything the store holds about its user, as one JSON-ready dict (Art. 20).

        Keys: ``format``, ``format_version``, ``exported_at``, ``store`` (schema version,
        creation time, catalogue size), ``events``, ``consent``, ``consent_log``,
        ``personal_state`` (or ``None``) and ``ledger``.
        """
        with self._op("export the store"):
            conn = self._db.conn
            conn.execute("BEGIN")  # one consistent snapshot of every table
            try:
                events = event_log.select_events(conn, "ORDER BY e.timestamp, e.id")
                consent = self._read_consent(conn)
                consent_log = read_consent_log(conn)
                entries = ledger.read_ledger(conn)
                state = profile.read_personal_state(conn)
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                catalogue_size = catalogue_table.catalogue_size(conn)
                schema_version = self.schema_version
            finally:
                conn.execute("COMMIT")
        return {
            "format": EXPORT_FORMAT,
            "format_version": 1,
            "exported_at": time.time(),
            "store": {
                "schema_version": schema_version,
                "created_at": float(meta.get("created_at", "0")),
                "created_by": meta.get("created_by"),
                "catalogue_size": int(catalogue_size),
            },
            "events": [event.to_json() for event in events],
            "consent": consent.to_dict(),
            "consent_log": [entry.to_dict() for entry in consent_log],
            "personal_state": state,
            "ledger": [entry.to_dict() for entry in entries],
        }

    def erase(self) -> dict[str, int]:
        """Erase everything about the user (GDPR Art. 17) and return rows deleted per table.

        Deletes every row of events, consent, the consent log, personal state and the
        ledger (and catalogue entries kept only for erased events), then ``VACUUM`` and
        ``wal_checkpoint(TRUNCATE)``, so the file is rebuilt without free pages and the
        ``-wal`` file is empty. With consent gone, the device takes part in nothing
        until consent is granted again.

        Raises:
            StoreError: another connection kept the WAL from being truncated; the rows
                are already deleted, so calling :meth:`erase` again finishes the job.
        """
        with self._op("erase the store"):
            return erase_personal_data(self._db, self._path)

    def check_integrity(self) -> None:
        """Run SQLite's quick, full and foreign-key checks on the file.

        Raises:
            StoreCorruptedError: a check failed; the message names the file and the
                first problems found.
        """
        with self._op("check the store's integrity"):
            check_integrity(self._db.conn, self._path)

    def info(self) -> dict[str, Any]:
        """Summary of the store without any event contents: sizes, consent, ledger."""
        with self._op("read store information"):
            conn = self._db.conn
            first, last, n_events = conn.execute(
                "SELECT min(timestamp), max(timestamp), count(*) FROM events"
            ).fetchone()
            catalogue_size = catalogue_table.catalogue_size(conn)
            has_vector = conn.execute(
                "SELECT count(*) FROM personal_state WHERE user_vector IS NOT NULL"
            ).fetchone()[0]
            rounds = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
            consent = self._read_consent(conn)
        return {
            "path": str(self._path),
            "schema_version": self.schema_version,
            "schema_version_supported": SCHEMA_VERSION,
            "journal_mode": journal,
            "file_bytes": self._path.stat().st_size,
            "catalogue_size": int(catalogue_size),
            "events": int(n_events),
            "first_event_at": first,
            "last_event_at": last,
            "consent": consent.to_dict(),
            "has_user_vector": bool(has_vector),
            "ledger_rounds": int(rounds),
            "epsilon_spent": self.epsilon_spent(),
        }
