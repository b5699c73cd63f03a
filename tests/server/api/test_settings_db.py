"""Settings fail closed on the ledger key; the database is WAL, migrated once, atomic."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from fedpers.privacy.errors import ConfigError
from fedpers.server.api.db import (
    MIGRATION_SETS,
    ConnectionPool,
    open_api_db,
    write_transaction,
)
from fedpers.server.api.main import create_app
from fedpers.server.api.settings import (
    ApiSettings,
    create_ledger_key,
    ledger_key_path,
    load_settings,
)


def test_defaults_put_the_database_and_key_in_the_run(tmp_path: Path) -> None:
    settings = ApiSettings(run_dir=tmp_path)
    assert settings.database_path == tmp_path / "api.db"
    assert settings.ledger_key_file == tmp_path / "api.db.ledger-key"
    other = ApiSettings(run_dir=tmp_path, db_path=tmp_path / "x" / "state.db")
    assert other.ledger_key_file == ledger_key_path(tmp_path / "x" / "state.db")


def test_missing_ledger_key_fails_closed(tiny_run: Path) -> None:
    settings = ApiSettings(run_dir=tiny_run)
    with pytest.raises(ConfigError, match="HMAC key is missing"):
        settings.ledger_key()
    with pytest.raises(ConfigError, match="HMAC key is missing"):
        create_app(settings)


def test_ledger_key_is_created_0600_once_and_never_overwritten(tmp_path: Path) -> None:
    settings = ApiSettings(run_dir=tmp_path)
    assert create_ledger_key(settings.ledger_key_file) is True
    assert os.stat(settings.ledger_key_file).st_mode & 0o777 == 0o600
    key = settings.ledger_key()
    assert len(key) == 32
    assert create_ledger_key(settings.ledger_key_file) is False
    assert settings.ledger_key() == key
    other = tmp_path / "other"
    other.mkdir()
    create_ledger_key(ApiSettings(run_dir=other).ledger_key_file)
    assert ApiSettings(run_dir=other).ledger_key() != key  # random, not a constant


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [("00" * 32, 0o644, "readable by others"), ("zz", 0o600, "not hex"), ("ab", 0o600, "shorter")],
)
def test_unsafe_or_broken_keys_are_refused(
    tmp_path: Path, text: str, mode: int, message: str
) -> None:
    settings = ApiSettings(run_dir=tmp_path)
    settings.ledger_key_file.write_text(text)
    settings.ledger_key_file.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        settings.ledger_key()


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDPERS_API_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("FEDPERS_API_MAX_BODY_BYTES", "4096")
    load_settings.cache_clear()
    try:
        settings = load_settings()
        assert settings.run_dir == tmp_path and settings.max_body_bytes == 4096
        monkeypatch.setenv("FEDPERS_API_MAX_BODY_BYTES", "12")
        load_settings.cache_clear()
        with pytest.raises(ConfigError, match="FEDPERS_API_MAX_BODY_BYTES"):
            load_settings()
        monkeypatch.delenv("FEDPERS_API_RUN_DIR")
        monkeypatch.delenv("FEDPERS_API_MAX_BODY_BYTES")
        load_settings.cache_clear()
        with pytest.raises(ConfigError, match="FEDPERS_API_RUN_DIR"):
            load_settings()
    finally:
        load_settings.cache_clear()


def test_database_is_wal_with_a_busy_timeout_and_every_migration(tmp_path: Path) -> None:
    db = open_api_db(tmp_path / "api.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    applied = {r[0] for r in db.execute("SELECT migration_set FROM _sqlite_migrations")}
    assert applied == {m.name for m in MIGRATION_SETS}
    count = db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
    db.conn.close()
    again = open_api_db(tmp_path / "api.db")  # reopening applies nothing twice
    assert again.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == count


def test_a_failed_write_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    db = open_api_db(tmp_path / "api.db")
    db.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), write_transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("half-way")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with write_transaction(db):
        db.execute("INSERT INTO t VALUES (3)")
    assert db.execute("SELECT x FROM t").fetchall() == [(3,)]


def test_pool_rolls_back_what_a_request_left_open(tmp_path: Path) -> None:
    open_api_db(tmp_path / "api.db").execute("CREATE TABLE t (x INTEGER)")
    pool = ConnectionPool(tmp_path / "api.db")
    with pool.connection() as db:
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute("INSERT INTO t VALUES (1)")
    with pool.connection() as db:
        assert not db.conn.in_transaction
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    pool.close()


def _open_and_count(path: str) -> int:
    db = open_api_db(Path(path))
    n = int(db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0])
    db.conn.close()
    return n


def test_processes_migrating_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    path = str(tmp_path / "api.db")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        counts = pool.map(_open_and_count, [path] * 4)
    expected = sum(len(m._migrations) for m in MIGRATION_SETS)
    assert counts == [expected] * 4
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
    assert len(names) == len(set(names)) == expected
