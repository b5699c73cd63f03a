"""The store file's SQLite connection: how it is opened, written and checked.

Every pragma the store relies on (WAL, ``synchronous=NORMAL``, ``secure_delete``) is set
in :func:`connect`; every sqlite3 error becomes a named fedpers error in
:func:`translate`; every write is one ``BEGIN IMMEDIATE`` transaction
(:func:`write_transaction`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from fedpers.privacy.errors import StoreCorruptedError, StoreError

__all__ = ["check_integrity", "connect", "translate", "write_transaction"]

_CORRUPTION_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_TIMEOUT_S = 5.0


def connect(path: Path) -> Database:
    """Open ``path`` with the store's pragmas (WAL, secure delete, foreign keys).

    Raises:
        sqlite3.Error: when SQLite cannot open or configure the file (callers translate).
    """
    conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        db = Database(conn, execute_plugins=False)
        db.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA secure_delete = ON")
        db.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        conn.close()
        raise
    return db


def translate(exc: sqlite3.Error, path: Path, action: str) -> StoreError:
    """Turn a sqlite3 error into the named fedpers error, naming the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    corrupted = (code is not None and (code & 0xFF) in _CORRUPTION_CODES) or (
        "malformed" in text or "not a database" in text
    )
    if corrupted:
        return StoreCorruptedError(
            f"{path}: the store file is corrupted ({text}) while trying to {action}; "
            "it was left untouched: restore it from a backup, or move it aside and create "
            "a new store with `fedpers client init`"
        )
    return StoreError(f"{path}: cannot {action}: {text}")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``): committed, or rolled back whole."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Run SQLite's quick, full and foreign-key checks on the file.

    Raises:
        StoreCorruptedError: a check failed; the message names the file and the first
            problems found.
    """
    problems: list[str] = []
    for pragma in ("quick_check", "integrity_check"):
        rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}").fetchall()]
        if rows != ["ok"]:
            problems.extend(f"{pragma}: {row}" for row in rows[:5])
    fk_rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    problems.extend(
        f"foreign_key_check: {table} row {rowid} -> {parent}"
        for table, rowid, parent, _ in fk_rows[:5]
    )
    if problems:
        raise StoreCorruptedError(
            f"{path}: the store file failed its integrity check: " + "; ".join(problems)
        )
