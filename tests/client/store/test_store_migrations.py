"""Versioned migrations: older stores upgrade in place, newer ones are refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from fedpers.client.store import SCHEMA_VERSION, EventStore, LedgerEntry
from fedpers.client.store.schema import MIGRATIONS_TABLE, applied_migrations, migrate
from fedpers.privacy.errors import StoreError


def _write_first_version_store(path: Path) -> None:
    """A store as a fedpers that knew only the first migration wrote it."""
    db = Database(sqlite3.connect(path))
    db.enable_wal()
    assert migrate(db, stop_before="0002_personal_state") == 1
    db.conn.executescript(
        """
        INSERT INTO meta (key, value) VALUES ('format', 'fedpers-device-store'),
            ('created_at', '1700000000.0'), ('created_by', '0.0.1'),
            ('catalogue_version', '0');
        INSERT INTO catalogue (item, idx) VALUES ('a', 0), ('b', 1);
        INSERT INTO events (item_id, event_type, value, timestamp, context)
            VALUES (2, 'click', 1.0, 1700000001.0, '{"hour":9}');
        INSERT INTO consent (id, purposes, gpc, updated_at) VALUES (1, '[1,5]', 0, 5.0);
        """
    )
    db.close()


def test_an_older_store_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _write_first_version_store(path)
    with EventStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.history() == ["b"]
        assert store.recent(1)[0].context == {"hour": 9}
        assert store.load_consent().updated_at == 5.0
        # tables of the later migrations now exist and work
        store.save_user_vector([1.0, 2.0])
        store.append_ledger(LedgerEntry(1, 0.3, 1e-5, 1.0, 0.1, 5, "rdp", 1.0))
        assert store.epsilon_spent() == 0.3
    db = Database(sqlite3.connect(path))
    assert applied_migrations(db) == ["0001_core", "0002_personal_state", "0003_ledger"]
    db.close()


def test_a_store_from_a_newer_fedpers_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    EventStore.create(path, ["a"]).close()
    conn = sqlite3.connect(path)
    conn.execute(
        f"INSERT INTO {MIGRATIONS_TABLE} (migration_set, name, applied_at) "
        "VALUES ('fedpers.client.store', '0099_from_the_future', 'later')"
    )
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer than this fedpers") as info:
        EventStore.open(path)
    assert "0099_from_the_future" in str(info.value)
    assert path.read_bytes() == before


def test_a_failing_migration_leaves_no_trace(tmp_path: Path) -> None:
    """Migrations are transactional: the schema change and its record commit together."""
    path = tmp_path / "old.db"
    _write_first_version_store(path)
    conn = sqlite3.connect(path)
    # Make 0002 fail half-way: its table name is already taken by a view.
    conn.execute("CREATE VIEW personal_state AS SELECT 1")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="personal_state"):
        EventStore.open(path)
    db = Database(sqlite3.connect(path))
    assert applied_migrations(db) == ["0001_core"]
    assert "ledger" not in db.table_names()
    db.close()


def test_concurrent_openers_upgrade_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _write_first_version_store(path)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait()
        try:
            EventStore.open(path).close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = Database(sqlite3.connect(path))
    assert applied_migrations(db) == ["0001_core", "0002_personal_state", "0003_ledger"]
    db.close()
