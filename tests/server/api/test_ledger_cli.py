"""``fedpers serve verify-ledger`` as a real command: OK, a tampered row, no key."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fedpers.server.api import consent_store
from fedpers.server.api.db import open_api_db
from fedpers.server.api.settings import create_ledger_key, ledger_key_path

FEDPERS = [str(Path(sys.executable).with_name("fedpers"))]


def _fedpers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDPERS, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def ledger_db(tmp_path: Path) -> Path:
    path = tmp_path / "api.db"
    key_file = ledger_key_path(path)
    create_ledger_key(key_file)
    key = bytes.fromhex(key_file.read_text().strip())
    db = open_api_db(path)
    try:
        change = consent_store.change_consent
        change(db, key, "shop-a", "u-1", "grant", [1, 5, 6], policy_version="v1")
        change(db, key, "shop-a", "u-1", "withdraw", [6])
        change(db, key, "shop-a", "u-2", "grant", [11])
        change(db, key, "shop-b", "u-1", "grant", [1])
        consent_store.erase_user(db, key, "shop-b", "u-1")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.conn.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_whole_ledger_verifies_without_writing(ledger_db: Path) -> None:
    before = _digest(ledger_db)
    r = _fedpers("serve", "verify-ledger", "--db", str(ledger_db), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["breaks"] == []
    assert report["chains"] == {"shop-a": 3, "shop-b": 2}
    assert report["shredded"] == {"shop-a": 0, "shop-b": 2}
    assert _digest(ledger_db) == before
    human = _fedpers("serve", "verify-ledger", "--db", str(ledger_db))
    assert human.returncode == 0
    assert human.stdout.startswith("ledger OK: 5 entries in 2 chains (2 shredded by erasure)")


def test_a_tampered_row_is_reported_at_its_seq(ledger_db: Path) -> None:
    conn = sqlite3.connect(ledger_db)
    content = conn.execute(
        "SELECT content FROM consent_ledger WHERE tenant = 'shop-a' AND seq = 2"
    ).fetchone()[0]
    forged = content.replace("[6]", "[1]")
    assert forged != content
    conn.execute(
        "UPDATE consent_ledger SET content = ? WHERE tenant = 'shop-a' AND seq = 2", [forged]
    )
    conn.commit()
    conn.close()
    r = _fedpers("serve", "verify-ledger", "--db", str(ledger_db), "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is False
    assert report["breaks"] == [
        {
            "tenant": "shop-a",
            "seq": 2,
            "problem": "content does not match its digest (content was changed)",
        }
    ]
    human = _fedpers("serve", "verify-ledger", "--db", str(ledger_db))
    assert human.returncode == 1
    assert "tenant shop-a: breaks at seq 2" in human.stdout


def test_a_missing_key_is_one_error_line(ledger_db: Path) -> None:
    ledger_key_path(ledger_db).unlink()
    r = _fedpers("serve", "verify-ledger", "--db", str(ledger_db), "--json")
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "HMAC key is missing" in r.stderr


def test_run_dir_without_a_database(tmp_path: Path) -> None:
    r = _fedpers("serve", "verify-ledger", "--run", str(tmp_path))
    assert r.returncode == 2
    assert "no API database" in r.stderr
