"""The API's embedded SQLite database: WAL, a busy timeout, versioned migrations.

:func:`open_api_db` opens one connection (WAL journal, ``busy_timeout``, foreign keys)
and applies every set of :data:`MIGRATION_SETS` (``sqlite_utils.migrations.Migrations``,
each migration in its own transaction). Migrations run under an exclusive file lock
beside the database, so several ``fedpers serve`` workers starting at once apply each
migration exactly once.

Several uvicorn workers share the file safely: each process (and each request) uses its
own connection from a :class:`ConnectionPool`, writes happen inside
:func:`write_transaction` (``BEGIN IMMEDIATE``: the write lock is taken up front, other
writers wait up to the busy timeout instead of failing half-way), and SQLite's WAL lets
readers run while one writer commits. A failed write rolls back whole.

Example:
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> db = open_api_db(Path(folder.name) / "api.db")
    >>> db.conn.execute("PRAGMA journal_mode").fetchone()[0]
    'wal'
    >>> with write_transaction(db):
    ...     _ = db.execute("CREATE TABLE notes (text TEXT)")
    ...     _ = db.execute("INSERT INTO notes VALUES ('kept')")
    >>> try:
    ...     with write_transaction(db):
    ...         _ = db.execute("INSERT INTO notes VALUES ('rolled back')")
    ...         raise ValueError("the request failed half-way")
    ... except ValueError:
    ...     pass
    >>> [row[0] for row in db.execute("SELECT text FROM notes")]
    ['kept']
    >>> db.conn.close(); folder.cleanup()
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from fedpers.privacy.errors import StoreError
from fedpers.server.api.auth import migrations as auth_migrations
from fedpers.server.api.consent_schema import CONSENT_MIGRATIONS, LEDGER_MIGRATIONS
from fedpers.server.api.experiments import migrations as engine_migrations

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATION_SETS",
    "ConnectionPool",
    "apply_migrations",
    "connect",
    "open_api_db",
    "write_transaction",
]

BUSY_TIMEOUT_S = 10.0
"""How long a connection waits for another writer's lock before giving up."""

MIGRATION_SETS: tuple[Migrations, ...] = (
    auth_migrations,
    engine_migrations,
    LEDGER_MIGRATIONS,
    CONSENT_MIGRATIONS,
)
"""Every migration set of the API, applied in this order by :func:`open_api_db`."""


def connect(path: Path) -> sqlite_utils.Database:
    """One connection to ``path``: WAL, busy timeout, foreign keys, no migrations.

    The connection may move between threads (``check_same_thread=False``) but must be
    used by one request at a time (see :class:`ConnectionPool`).

    Raises:
        StoreError: the file cannot be opened as SQLite.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open the API database ({exc})") from exc
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")
    return db


def apply_migrations(db: sqlite_utils.Database, path: Path) -> None:
    """Apply every pending migration of :data:`MIGRATION_SETS`, one process at a time.

    Raises:
        StoreError: a migration failed (it was rolled back).
    """
    lock_path = path.with_name(path.name + ".migrate-lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for migration_set in MIGRATION_SETS:
                migration_set.apply(db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: a migration failed ({exc})") from exc
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_api_db(path: Path) -> sqlite_utils.Database:
    """Open the API database at ``path`` and bring its schema up to date.

    Args:
        path: the SQLite file (created if missing).

    Raises:
        StoreError: the file cannot be opened or migrated.
    """
    db = connect(Path(path))
    apply_migrations(db, Path(path))
    return db


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that takes SQLite's write lock at its start.

    Everything inside commits together or, on any exception, not at all.
    """
    conn = db.conn
    if conn.in_transaction:  # nested: a savepoint inside the caller's transaction
        with db.atomic():
            yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


class ConnectionPool:
    """Connections of one process to one database, each lent to one request at a time.

    Idle connections sit on a list used as a stack (``list.pop`` and ``list.append`` are
    atomic, so worker threads and the event loop can share it without a lock).
    """

    def __init__(self, path: Path, max_idle: int = 16) -> None:
        """Lend connections to ``path`` (the schema must be migrated already)."""
        self.path = Path(path)
        self.max_idle = int(max_idle)
        self._idle: list[sqlite_utils.Database] = []

    def acquire(self) -> sqlite_utils.Database:
        """An idle connection, or a new one."""
        try:
            return self._idle.pop()
        except IndexError:
            return connect(self.path)

    def release(self, db: sqlite_utils.Database) -> None:
        """Give ``db`` back (a transaction left open is rolled back first)."""
        if db.conn.in_transaction:
            db.conn.rollback()
        if len(self._idle) < self.max_idle:
            self._idle.append(db)
        else:
            db.conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite_utils.Database]:
        """Borrow a connection for a ``with`` block."""
        db = self.acquire()
        try:
            yield db
        finally:
            self.release(db)

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._idle.pop().conn.close()
            except IndexError:
                return
