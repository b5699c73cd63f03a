"""Erasure (GDPR Art. 17): delete every personal row, then leave no bytes of it behind."""

from __future__ import annotations

from pathlib import Path

from sqlite_utils import Database

from fedpers.client.store.connection import write_transaction
from fedpers.privacy.errors import StoreError

__all__ = ["ERASED_TABLES", "erase_personal_data"]

ERASED_TABLES = ("events", "consent", "consent_log", "personal_state", "ledger")
"""Tables :func:`erase_personal_data` empties (the catalogue and meta are not personal)."""


def erase_personal_data(db: Database, path: Path) -> dict[str, int]:
    """Empty :data:`ERASED_TABLES`, vacuum and truncate the WAL; return rows deleted per table.

    Catalogue entries kept only for erased events go too. ``secure_delete`` (set when the
    file is opened) overwrites freed pages; ``VACUUM`` rebuilds the file without free
    pages and ``wal_checkpoint(TRUNCATE)`` empties the ``-wal`` file.

    Raises:
        StoreError: another connection kept the WAL from being truncated; the rows are
            already deleted, so erasing again finishes the job.
    """
    with write_transaction(db.conn) as conn:
        counts = {
            table: int(conn.execute(f"DELETE FROM {table}").rowcount) for table in ERASED_TABLES
        }
        conn.execute("DELETE FROM catalogue WHERE idx IS NULL")
    db.vacuum()
    busy, _, _ = db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise StoreError(
            f"{path}: rows erased, but another connection is reading the store, "
            "so the write-ahead log could not be truncated; close it and erase again"
        )
    return counts
