"""ReadOnlyStore: the auditor's view of a device store, which never changes the file."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from fedpers.client.consent import ConsentManager
from fedpers.client.store import Event, EventStore, EventType, LedgerEntry
from fedpers.client.store.readonly import ReadOnlyStore, connect_readonly
from fedpers.privacy.consent import Purpose
from fedpers.privacy.errors import StoreError

CATALOGUE = ["a", "b", "c", "d"]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _fingerprint(path: Path) -> dict[str, str]:
    """SHA-256 of the store file and its -wal/-shm companions that exist."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        f = Path(f"{path}{suffix}")
        if f.exists():
            out[suffix] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _run_sql(path: Path, script: str) -> Path:
    """Run ``script`` on the SQLite file at ``path`` (created when missing) and commit."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(script)
        conn.commit()
    return path


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "device-0000001.db"
    with EventStore.create(path, CATALOGUE) as store:
        ConsentManager(store).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
        ConsentManager(store).grant(Purpose.USE_PROFILES)
        store.append_many(
            Event(item, EventType.CLICK, 1.0, 1_700_000_000.0 + t)
            for t, item in enumerate(["c", "a", "c"])
        )
        store.save_user_vector(np.arange(4, dtype=np.float32))
        store.append_ledger(LedgerEntry(1, 0.5, 1e-5, 1.1, 0.1, 3, "rdp", 1.0))
        store.append_ledger(LedgerEntry(2, 0.75, 1e-5, 1.1, 0.1, 3, "rdp", 2.0))
    return path


def test_reads_what_the_store_holds(store_file: Path) -> None:
    with EventStore.open(store_file) as writer:
        expected_log = writer.consent_log()
        expected_consent = writer.load_consent()
    with ReadOnlyStore.open(store_file) as store:
        assert store.path == store_file
        assert store.history_indices().tolist() == [2, 0, 2]
        assert store.consent() == expected_consent
        assert store.consent_log() == expected_log
        assert [e.granted for e in store.consent_log()][-1] == frozenset(
            {Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES, Purpose.USE_PROFILES}
        )
        assert store.epsilon_spent() == 0.75
        assert store.has_personal_state()
        vector = store.user_vector()
        assert vector is not None and vector.dtype == np.float32
        assert vector.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert store.meta()["format"] == "fedpers-device-store"


def test_reading_changes_no_byte_of_the_store(store_file: Path) -> None:
    before = _fingerprint(store_file)
    with ReadOnlyStore.open(store_file) as store:
        store.history_indices(), store.consent_log(), store.user_vector(), store.meta()
    after = _fingerprint(store_file)
    # SQLite may leave an empty -wal and its -shm index beside a WAL-mode file it read
    assert after[""] == before[""]
    assert after.get("-wal", EMPTY_SHA256) in {before.get("-wal"), EMPTY_SHA256}


def test_an_erased_store_reads_as_empty(store_file: Path) -> None:
    with EventStore.open(store_file) as writer:
        writer.erase()
    with ReadOnlyStore.open(store_file) as store:
        assert store.history_indices().size == 0
        assert store.consent() is None and store.consent_log() == []
        assert store.epsilon_spent() is None
        assert not store.has_personal_state() and store.user_vector() is None


def test_an_older_schema_has_no_ledger_or_personal_state(tmp_path: Path) -> None:
    path = _run_sql(
        tmp_path / "old.db",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE catalogue (id INTEGER PRIMARY KEY, item TEXT, idx INTEGER);"
        "CREATE TABLE events (id INTEGER PRIMARY KEY, item_id INTEGER, event_type TEXT,"
        " value REAL, timestamp REAL, context TEXT);"
        "CREATE TABLE consent (id INTEGER PRIMARY KEY, purposes TEXT, gpc INTEGER,"
        " updated_at REAL);"
        "CREATE TABLE consent_log (id INTEGER PRIMARY KEY, at REAL, action TEXT,"
        " purposes TEXT, granted TEXT, gpc INTEGER);"
        "INSERT INTO consent VALUES (1, '[1, 10]', 1, 5.0);",
    )
    with ReadOnlyStore.open(path) as store:
        assert store.epsilon_spent() is None and store.user_vector() is None
        consent = store.consent()
        assert consent is not None and consent.gpc
        assert consent.granted == {Purpose.STORE_ACCESS, Purpose.DEVELOP_SERVICES}


def test_refuses_what_is_not_a_device_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such SQLite file"):
        ReadOnlyStore.open(tmp_path / "missing.db")
    other = _run_sql(tmp_path / "other.db", "CREATE TABLE t (x);")
    with pytest.raises(StoreError, match="not a fedpers device store"):
        ReadOnlyStore.open(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="cannot open read-only"):
        connect_readonly(garbage)


def test_a_malformed_row_is_a_store_error(store_file: Path) -> None:
    _run_sql(store_file, "UPDATE consent SET purposes = 'not json' WHERE id = 1;")
    with (
        ReadOnlyStore.open(store_file) as store,
        pytest.raises(StoreError, match="consent row cannot be read"),
    ):
        store.consent()
