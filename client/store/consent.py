"""The consent tables: the current consent state (one row) and the log of every change."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from fedpers.client.store.records import ConsentLogEntry
from fedpers.privacy.consent import ConsentState, Purpose
from fedpers.privacy.errors import StoreCorruptedError

__all__ = ["read_consent", "read_consent_log", "write_consent"]


def _purpose_list(purposes: Iterable[Purpose]) -> str:
    return json.dumps(sorted(int(p) for p in purposes))


def _purpose_set(text: str) -> frozenset[Purpose]:
    return frozenset(Purpose(int(p)) for p in json.loads(text))


def read_consent(conn: sqlite3.Connection, path: Path) -> ConsentState:
    """The current consent state (nothing granted, GPC unset when never decided).

    Raises:
        StoreCorruptedError: the consent row cannot be read; the message names ``path``.
    """
    row = conn.execute("SELECT purposes, gpc, updated_at FROM consent WHERE id = 1").fetchone()
    if row is None or row[0] is None:
        return ConsentState()
    purposes, gpc, updated_at = row
    try:
        return ConsentState(_purpose_set(purposes), bool(gpc), float(updated_at))
    except (ValueError, TypeError) as exc:
        raise StoreCorruptedError(f"{path}: the consent row cannot be read ({exc})") from None


def write_consent(
    conn: sqlite3.Connection, state: ConsentState, action: str, purposes: Iterable[Purpose]
) -> None:
    """Make ``state`` current and log ``action`` on ``purposes`` (in the caller's transaction)."""
    granted = _purpose_list(state.granted)
    conn.execute(
        "INSERT INTO consent (id, purposes, gpc, updated_at) VALUES (1, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET purposes = excluded.purposes, "
        "gpc = excluded.gpc, updated_at = excluded.updated_at",
        [granted, int(state.gpc), state.updated_at],
    )
    conn.execute(
        "INSERT INTO consent_log (at, action, purposes, granted, gpc) VALUES (?, ?, ?, ?, ?)",
        [state.updated_at, action, _purpose_list(purposes), granted, int(state.gpc)],
    )


def read_consent_log(conn: sqlite3.Connection) -> list[ConsentLogEntry]:
    """Every consent change, oldest first."""
    rows = conn.execute(
        "SELECT at, action, purposes, granted, gpc FROM consent_log ORDER BY id"
    ).fetchall()
    return [
        ConsentLogEntry(
            at=float(at),
            action=action,
            purposes=_purpose_set(named),
            granted=_purpose_set(granted),
            gpc=bool(gpc),
        )
        for at, action, named, granted, gpc in rows
    ]
