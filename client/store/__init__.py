"""fedpers.client.store: the device's local event store (one SQLite file per device).

See :class:`EventStore` for the operations and the durability and erasure guarantees.
"""

from fedpers.client.store.erasure import ERASED_TABLES
from fedpers.client.store.events import (
    MAX_TIMESTAMP,
    Event,
    EventType,
    parse_events_jsonl,
    read_events_jsonl,
)
from fedpers.client.store.records import ConsentLogEntry, LedgerEntry
from fedpers.client.store.schema import SCHEMA_VERSION
from fedpers.client.store.store import EXPORT_FORMAT, STORE_FORMAT, EventStore

__all__ = [
    "ERASED_TABLES",
    "EXPORT_FORMAT",
    "MAX_TIMESTAMP",
    "SCHEMA_VERSION",
    "STORE_FORMAT",
    "ConsentLogEntry",
    "Event",
    "EventStore",
    "EventType",
    "LedgerEntry",
    "parse_events_jsonl",
    "read_events_jsonl",
]
