"""Erasure (GDPR Art. 17): afterwards the file holds no trace of the user's events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedpers.client.consent import ConsentManager
from fedpers.client.store import ERASED_TABLES, Event, EventStore, EventType, LedgerEntry
from fedpers.privacy.consent import Purpose

CATALOGUE = [f"catalogue-item-{i:04d}" for i in range(200)]
DROPPED = "touched-then-dropped-item"  # leaves the model later; only events refer to it
SECRETS = ("secret-locale-xq-ZZ", "secret-device-7d1c9e", "secret-campaign-9f2b")


def _occurrences(path: Path, needle: str) -> int:
    """Occurrences of ``needle`` in the store file and its -wal and -shm companions."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(path) + suffix)
        if f.exists():
            total += f.read_bytes().count(needle.encode())
    return total


@pytest.fixture
def erased(tmp_path: Path) -> tuple[Path, EventStore, dict[str, int]]:
    path = tmp_path / "device.db"
    store = EventStore.create(path, [DROPPED, *CATALOGUE])
    ConsentManager(store).grant(*Purpose)
    events = [
        Event(
            CATALOGUE[i % 50] if i % 10 else DROPPED,
            EventType.PURCHASE,
            1.0,
            1_700_000_000.0 + i,
            {"locale": SECRETS[0], "device": SECRETS[1], "campaign": SECRETS[2], "n": i},
        )
        for i in range(3000)
    ]
    store.append_many(events[:2000])
    for event in events[2000:2100]:
        store.append(event)
    store.set_catalogue(CATALOGUE)  # DROPPED stays in the file only because of events
    store.save_user_vector(np.full(32, 0.123, dtype=np.float32))
    store.save_personal_head(b"secret-head-bytes-4e1a")
    store.append_ledger(LedgerEntry(1, 0.42, 1e-5, 1.1, 0.02, 30, "rdp", 1.0))
    assert _occurrences(path, SECRETS[0]) > 0  # the scan does find what is there
    assert _occurrences(path, DROPPED) > 0
    counts = store.erase()
    return path, store, counts


def test_erase_deletes_every_personal_row(
    erased: tuple[Path, EventStore, dict[str, int]],
) -> None:
    path, store, counts = erased
    assert counts["events"] == 2100
    assert counts["ledger"] == 1
    assert counts["personal_state"] == 1
    assert set(counts) == set(ERASED_TABLES)
    store.close()
    conn = sqlite3.connect(path)
    for table in ERASED_TABLES:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    # only the current model's catalogue (public, not personal) is left
    items = [r[0] for r in conn.execute("SELECT item FROM catalogue ORDER BY idx")]
    conn.close()
    assert items == CATALOGUE


def test_erase_vacuums_and_truncates_the_wal(
    erased: tuple[Path, EventStore, dict[str, int]],
) -> None:
    path, store, _ = erased
    conn = store._db.conn
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    wal = Path(str(path) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    # a vacuumed store is as small as a fresh one with the same catalogue
    fresh = path.with_name("fresh.db")
    EventStore.create(fresh, CATALOGUE).close()
    assert path.stat().st_size <= fresh.stat().st_size + 4096


def test_byte_scan_finds_no_trace_of_any_event(
    erased: tuple[Path, EventStore, dict[str, int]],
) -> None:
    path, store, _ = erased
    for secret in (*SECRETS, DROPPED, "secret-head-bytes"):
        assert _occurrences(path, secret) == 0, secret
    # catalogue item ids are still there exactly as in a store that never saw an event
    fresh = path.with_name("fresh.db")
    EventStore.create(fresh, CATALOGUE).close()
    for item in CATALOGUE[:50]:
        assert _occurrences(path, item) == _occurrences(fresh, item), item
    assert store.export()["events"] == []
    store.close()
    # still no trace once every connection is closed and the file is at rest
    for secret in (*SECRETS, DROPPED):
        assert _occurrences(path, secret) == 0, secret
