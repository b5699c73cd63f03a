"""The consent ledger: chains verify, and every kind of tampering is reported at its seq."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlite_utils

from fedpers.server.api.consent_store import change_consent, erase_user, set_objection
from fedpers.server.api.db import open_api_db
from fedpers.server.api.ledger import (
    GENESIS,
    append_entry,
    content_digest,
    entry_hash,
    subject_of,
    verify_ledger,
)

KEY = bytes(range(32))


@pytest.fixture
def db(tmp_path: Path) -> sqlite_utils.Database:
    return open_api_db(tmp_path / "api.db")


def _history(db: sqlite_utils.Database) -> None:
    change_consent(db, KEY, "t1", "alice", "grant", [1, 5, 6], policy_version="v1", source="cmp")
    change_consent(db, KEY, "t1", "bob", "grant", ["P1", "P11"], policy_version="v1", source="cmp")
    change_consent(db, KEY, "t1", "alice", "withdraw", ["P6"], source="settings")
    set_objection(db, KEY, "t1", "bob", True, source="form")
    change_consent(db, KEY, "t2", "alice", "grant", [1], policy_version="v2", source="cmp")


def test_untouched_chains_verify(db: sqlite_utils.Database) -> None:
    _history(db)
    report = verify_ledger(db, KEY)
    assert report.ok, report.breaks
    assert report.chains == {"t1": 4, "t2": 1}
    rows = list(
        db.query(
            "SELECT seq, prev_hash, entry_hash FROM consent_ledger WHERE tenant='t1' ORDER BY seq"
        )
    )
    assert rows[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in rows[1:]] == [r["entry_hash"] for r in rows[:-1]]


def test_the_wrong_key_breaks_the_first_entry(db: sqlite_utils.Database) -> None:
    _history(db)
    report = verify_ledger(db, b"another key of thirty-two bytes!")
    assert not report.ok
    assert {(b.tenant, b.seq) for b in report.breaks} == {("t1", 1), ("t2", 1)}


@pytest.mark.parametrize(
    ("sql", "seq", "problem"),
    [
        (
            "UPDATE consent_ledger SET action = 'grant' WHERE tenant='t1' AND seq = 3",
            3,
            "entry hash",
        ),
        ("UPDATE consent_ledger SET at = at - 3600 WHERE tenant='t1' AND seq = 2", 2, "entry hash"),
        (
            "UPDATE consent_ledger SET content = replace(content, '[6]', '[]') "
            "WHERE tenant='t1' AND seq = 3",
            3,
            "content",
        ),
        ("DELETE FROM consent_ledger WHERE tenant='t1' AND seq = 2", 2, "missing"),
        (
            "DELETE FROM consent_ledger WHERE tenant='t1' AND seq = 4",
            4,
            "newest entries were deleted",
        ),
        (
            "UPDATE consent_ledger SET content = NULL, subject = NULL "
            "WHERE tenant='t1' AND seq = 2",
            2,
            "not shredded",
        ),
        (
            "UPDATE consent_ledger SET subject = (SELECT subject FROM consent_ledger "
            "WHERE seq = 1 AND tenant='t1') WHERE tenant='t1' AND seq = 2",
            2,
            "subject",
        ),
        ("UPDATE ledger_head SET seq = 3 WHERE tenant='t1'", 3, "signature"),
    ],
)
def test_tampering_in_sqlite_is_reported_at_its_seq(
    db: sqlite_utils.Database, sql: str, seq: int, problem: str
) -> None:
    _history(db)
    db.execute(sql)
    db.conn.commit()
    report = verify_ledger(db, KEY)
    assert not report.ok
    assert [(b.tenant, b.seq) for b in report.breaks] == [("t1", seq)]
    assert problem in report.breaks[0].problem
    assert report.chains["t2"] == 1  # the other tenant's chain is untouched


def test_a_forged_content_with_a_recomputed_digest_needs_the_key(db: sqlite_utils.Database) -> None:
    _history(db)
    row = db.execute("SELECT content FROM consent_ledger WHERE tenant='t1' AND seq=1").fetchone()
    forged = json.loads(row[0])
    forged["purposes"] = [1]
    text = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    wrong_key = b"x" * 32  # a tamperer without the key recomputes with another one
    db.execute(
        "UPDATE consent_ledger SET content = ?, content_digest = ? WHERE tenant='t1' AND seq=1",
        [text, content_digest(wrong_key, text)],
    )
    db.conn.commit()
    report = verify_ledger(db, KEY)
    assert [(b.tenant, b.seq) for b in report.breaks] == [("t1", 1)]


def test_erasure_shreds_content_and_the_chain_still_verifies(db: sqlite_utils.Database) -> None:
    _history(db)
    erase_user(db, KEY, "t1", "alice")
    report = verify_ledger(db, KEY)
    assert report.ok, report.breaks
    assert report.shredded == {"t1": 3, "t2": 0}  # two decisions and the erase entry
    t1 = list(db.query("SELECT subject, content FROM consent_ledger WHERE tenant='t1'"))
    alice = subject_of(KEY, "alice")
    assert all("alice" not in (r["content"] or "") for r in t1)
    assert all(r["subject"] != alice for r in t1)
    # tenant t2 did not erase alice: its entry still names her
    t2 = db.execute("SELECT subject FROM consent_ledger WHERE tenant='t2'").fetchone()
    assert t2[0] == alice


def test_digest_has_a_nonce_so_equal_decisions_differ(db: sqlite_utils.Database) -> None:
    a = append_entry(db, KEY, "t", "grant", "u", {"purposes": [1]}, at=1.0)
    b = append_entry(db, KEY, "t", "grant", "u", {"purposes": [1]}, at=1.0)
    db.conn.commit()
    digests = [r[0] for r in db.execute("SELECT content_digest FROM consent_ledger").fetchall()]
    assert digests[0] != digests[1]
    assert (
        a.content is not None and b.content is not None and a.content["nonce"] != b.content["nonce"]
    )
    assert entry_hash(KEY, "t", 1, 1.0, "grant", digests[0], GENESIS) == a.entry_hash
