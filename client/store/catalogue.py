"""The catalogue table: item ids of the current global model, in model index order.

Events refer to catalogue rows; an item the model dropped keeps its row (with no index)
while events still refer to it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fedpers.privacy.errors import DataError

__all__ = [
    "catalogue_size",
    "catalogue_version",
    "drop_orphan_items",
    "read_catalogue",
    "read_item_ids",
    "validate_catalogue",
    "write_catalogue",
]


def validate_catalogue(items: Sequence[str]) -> list[str]:
    """The catalogue as a list, checked.

    Raises:
        DataError: the catalogue is empty or holds duplicate, empty or padded ids.
    """
    catalogue = list(items)
    if not catalogue:
        raise DataError("the catalogue must hold at least one item id")
    seen: set[str] = set()
    for position, item in enumerate(catalogue):
        if not isinstance(item, str) or not item or item != item.strip():
            raise DataError(
                f"catalogue entry {position}: item ids are non-empty strings without "
                f"surrounding whitespace, got {item!r}"
            )
        if item in seen:
            raise DataError(f"catalogue entry {position}: duplicate item id {item!r}")
        seen.add(item)
    return catalogue


def read_catalogue(conn: sqlite3.Connection) -> list[str]:
    """Item ids of the current model, in model index order."""
    rows = conn.execute("SELECT item FROM catalogue WHERE idx IS NOT NULL ORDER BY idx").fetchall()
    return [row[0] for row in rows]


def catalogue_size(conn: sqlite3.Connection) -> int:
    """Number of items in the current model."""
    return int(conn.execute("SELECT count(*) FROM catalogue WHERE idx IS NOT NULL").fetchone()[0])


def catalogue_version(conn: sqlite3.Connection) -> str | None:
    """The counter :func:`write_catalogue` bumps, to know when a cached mapping is stale."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'catalogue_version'").fetchone()
    return row[0] if row else None


def read_item_ids(conn: sqlite3.Connection) -> dict[str, int]:
    """Row id of every item of the current model, by item id."""
    return dict(conn.execute("SELECT item, id FROM catalogue WHERE idx IS NOT NULL").fetchall())


def write_catalogue(conn: sqlite3.Connection, items: list[str]) -> None:
    """Make ``items`` the current model's order (inside the caller's transaction)."""
    conn.execute("UPDATE catalogue SET idx = NULL")
    conn.executemany(
        "INSERT INTO catalogue (item, idx) VALUES (?, ?) "
        "ON CONFLICT (item) DO UPDATE SET idx = excluded.idx",
        [(item, idx) for idx, item in enumerate(items)],
    )
    drop_orphan_items(conn)
    conn.execute(
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) "
        "WHERE key = 'catalogue_version'"
    )


def drop_orphan_items(conn: sqlite3.Connection) -> None:
    """Forget items that left the model and that no event refers to any more."""
    conn.execute(
        "DELETE FROM catalogue WHERE idx IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM events WHERE events.item_id = catalogue.id)"
    )
