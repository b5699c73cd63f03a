"""The device's record-level privacy ledger: one row per round of DP-SGD."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fedpers.client.store.records import LedgerEntry
from fedpers.privacy.errors import DataError, StoreError

__all__ = ["insert_ledger_entry", "read_epsilon_spent", "read_ledger"]


def insert_ledger_entry(conn: sqlite3.Connection, path: Path, entry: LedgerEntry) -> None:
    """Record one round (inside the caller's transaction).

    Raises:
        StoreError: the ledger already holds an entry for ``entry.round``.
        DataError: ``entry`` is not a :class:`LedgerEntry`.
    """
    if not isinstance(entry, LedgerEntry):
        raise DataError(f"expected a LedgerEntry, got {type(entry).__name__}")
    exists = conn.execute("SELECT 1 FROM ledger WHERE round = ?", [entry.round]).fetchone()
    if exists:
        raise StoreError(f"{path}: the privacy ledger already holds round {entry.round}")
    conn.execute(
        "INSERT INTO ledger (round, epsilon, delta, noise_multiplier, sample_rate, "
        "steps, accountant, created_at) VALUES (:round, :epsilon, :delta, "
        ":noise_multiplier, :sample_rate, :steps, :accountant, :created_at)",
        entry.to_dict(),
    )


def read_ledger(conn: sqlite3.Connection) -> list[LedgerEntry]:
    """Every ledger entry, by round."""
    rows = conn.execute(
        "SELECT round, epsilon, delta, noise_multiplier, sample_rate, steps, "
        "accountant, created_at FROM ledger ORDER BY round"
    ).fetchall()
    return [LedgerEntry(*row) for row in rows]


def read_epsilon_spent(conn: sqlite3.Connection) -> float:
    """Record-level epsilon spent so far: the last entry's composed epsilon, else 0."""
    row = conn.execute("SELECT epsilon FROM ledger ORDER BY round DESC LIMIT 1").fetchone()
    return 0.0 if row is None else float(row[0])
