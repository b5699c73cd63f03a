"""Several processes change consent at once: one unforked chain, state and ledger agree."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from fedpers.server.api import consent_store
from fedpers.server.api.db import open_api_db
from fedpers.server.api.ledger import verify_ledger
from fedpers.server.api.settings import create_ledger_key, ledger_key_path

WRITERS = 3
DECISIONS = 20


def _key(path: Path) -> bytes:
    return bytes.fromhex(ledger_key_path(path).read_text().strip())


def _writer(path: str, worker: int) -> None:
    db = open_api_db(Path(path))
    key = _key(Path(path))
    try:
        for i in range(DECISIONS):
            action = "grant" if i % 2 == 0 else "withdraw"
            consent_store.change_consent(
                db, key, "shop-a", "u-shared", action, [5 if worker % 2 else 6], source=f"w{worker}"
            )
            consent_store.change_consent(
                db, key, "shop-a", f"u-{worker}", "grant", [1, 5, 6], source=str(i)
            )
    finally:
        db.conn.close()


def test_concurrent_writers_keep_one_verifiable_chain(tmp_path: Path) -> None:
    path = tmp_path / "api.db"
    create_ledger_key(ledger_key_path(path))
    open_api_db(path).conn.close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    db = open_api_db(path)
    key = _key(path)
    try:
        report = verify_ledger(db, key)
        assert report.ok, report.breaks
        assert report.chains == {"shop-a": WRITERS * DECISIONS * 2}
        seqs = [r[0] for r in db.execute("SELECT seq FROM consent_ledger ORDER BY seq")]
        assert seqs == list(range(1, WRITERS * DECISIONS * 2 + 1))
        history = consent_store.consent_history(db, key, "shop-a", "u-shared")
        assert len(history) == WRITERS * DECISIONS
        replayed: set[int] = set()
        for entry in history:  # replaying the ledger gives the stored state
            if entry["action"] == "grant":
                replayed |= set(entry["purposes"])
            else:
                replayed -= set(entry["purposes"])
        stored = consent_store.load_user_consent(db, "shop-a", "u-shared")
        assert {int(p) for p in stored.granted} == replayed
    finally:
        db.conn.close()
