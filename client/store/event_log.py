"""The events table: rows in, events out, the history in time order, retention."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedpers.client.store.catalogue import drop_orphan_items
from fedpers.client.store.events import Event, EventType
from fedpers.privacy.errors import DataError

__all__ = [
    "insert_event",
    "insert_events",
    "purge_before",
    "read_history",
    "read_history_indices",
    "select_events",
]

_INSERT_EVENT = (
    "INSERT INTO events (item_id, event_type, value, timestamp, context) VALUES (?, ?, ?, ?, ?)"
)
_SELECT_EVENTS = (
    "SELECT c.item, e.event_type, e.value, e.timestamp, e.context "
    "FROM events e JOIN catalogue c ON c.id = e.item_id "
)


def _event_row(item_ids: Mapping[str, int], event: Event) -> tuple[int, str, float, float, str]:
    if not isinstance(event, Event):
        raise DataError(f"expected an Event, got {type(event).__name__}")
    item_id = item_ids.get(event.item)
    if item_id is None:
        raise DataError(f"unknown item {event.item!r}: not in the device's catalogue")
    return (item_id, event.event_type.value, event.value, event.timestamp, event.context_json)


def insert_event(conn: sqlite3.Connection, item_ids: Mapping[str, int], event: Event) -> int:
    """Insert one event (inside the caller's transaction); return its row id.

    Raises:
        DataError: ``event`` is not an :class:`Event` or its item is not in the catalogue.
    """
    return int(conn.execute(_INSERT_EVENT, _event_row(item_ids, event)).lastrowid or 0)


def insert_events(
    conn: sqlite3.Connection, item_ids: Mapping[str, int], events: Iterable[Event]
) -> int:
    """Insert ``events`` (inside the caller's transaction), all or none; return how many.

    Raises:
        DataError: an event is invalid; the message names its 0-based index.
    """
    rows = []
    for index, event in enumerate(events):
        try:
            rows.append(_event_row(item_ids, event))
        except DataError as exc:
            raise DataError(f"event {index}: {exc}") from None
    conn.executemany(_INSERT_EVENT, rows)
    return len(rows)


def select_events(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Event]:
    """Events joined with their item ids; ``sql`` is the ``ORDER BY``/``LIMIT`` tail."""
    rows = conn.execute(_SELECT_EVENTS + sql, params).fetchall()
    return [
        Event(item, EventType(kind), value, ts, json.loads(context))
        for item, kind, value, ts, context in rows
    ]


def read_history(conn: sqlite3.Connection) -> list[str]:
    """Item ids of every stored event, in time order."""
    rows = conn.execute(
        "SELECT c.item FROM events e JOIN catalogue c ON c.id = e.item_id "
        "ORDER BY e.timestamp, e.id"
    ).fetchall()
    return [row[0] for row in rows]


def read_history_indices(conn: sqlite3.Connection) -> np.ndarray:
    """Catalogue indices of the events' items in time order (items still in the model)."""
    rows = conn.execute(
        "SELECT c.idx FROM events e JOIN catalogue c ON c.id = e.item_id "
        "WHERE c.idx IS NOT NULL ORDER BY e.timestamp, e.id"
    ).fetchall()
    return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))


def purge_before(conn: sqlite3.Connection, cutoff_ts: float) -> int:
    """Delete events before ``cutoff_ts`` (inside the caller's transaction); return how many.

    Raises:
        DataError: ``cutoff_ts`` is not a finite number.
    """
    if isinstance(cutoff_ts, bool) or not isinstance(cutoff_ts, int | float):
        raise DataError(f"cutoff must be epoch seconds, got {cutoff_ts!r}")
    if not math.isfinite(cutoff_ts):
        raise DataError(f"cutoff must be finite, got {cutoff_ts!r}")
    deleted = conn.execute("DELETE FROM events WHERE timestamp < ?", [cutoff_ts]).rowcount
    drop_orphan_items(conn)
    return int(deleted)
