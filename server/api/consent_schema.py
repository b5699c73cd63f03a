"""The tables of the consent ledger and the consent state (two migration sets).

Kept apart from the modules that use the tables so that :mod:`fedpers.server.api.db`
can list them in ``MIGRATION_SETS`` without an import cycle.

``consent_ledger`` / ``ledger_head``
    the hash-chained ledger (:mod:`fedpers.server.api.ledger`).
``consent_state``
    one row per (tenant, user): granted purposes, objection, policy version, source.
``tombstones``
    erased ids (:func:`fedpers.server.api.consent_store.tombstone_of`), per tenant.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

__all__ = ["CONSENT_MIGRATIONS", "LEDGER_MIGRATIONS"]

LEDGER_MIGRATIONS = Migrations("fedpers.api.ledger")
"""The ledger's tables."""

CONSENT_MIGRATIONS = Migrations("fedpers.api.consent")
"""The consent state and the tombstones."""


@LEDGER_MIGRATIONS()
def m001_ledger(db: sqlite_utils.Database) -> None:
    """Create the ledger and its signed chain heads."""
    db.execute(
        """
        CREATE TABLE consent_ledger (
            tenant TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at REAL NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            content TEXT,
            content_digest TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            entry_hash TEXT NOT NULL,
            shredded_at REAL,
            PRIMARY KEY (tenant, seq)
        )
        """
    )
    db.execute("CREATE INDEX consent_ledger_subject ON consent_ledger (tenant, subject)")
    db.execute(
        """
        CREATE TABLE ledger_head (
            tenant TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            entry_hash TEXT NOT NULL,
            signature TEXT NOT NULL
        )
        """
    )


@CONSENT_MIGRATIONS()
def m001_consent(db: sqlite_utils.Database) -> None:
    """Create the per-user consent state and the tombstones of erased ids."""
    db.execute(
        """
        CREATE TABLE consent_state (
            tenant TEXT NOT NULL,
            user_id TEXT NOT NULL,
            granted TEXT NOT NULL,
            objection INTEGER NOT NULL DEFAULT 0,
            policy_version TEXT,
            source TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (tenant, user_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE tombstones (
            tenant TEXT NOT NULL,
            tombstone TEXT NOT NULL,
            erased_at REAL NOT NULL,
            PRIMARY KEY (tenant, tombstone)
        )
        """
    )
