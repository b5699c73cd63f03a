"""Export (Art. 20) and erasure (Art. 17): everything removed, shredded, tombstoned, 410."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from served_app import EngineApi

from fedpers.server.api import consent_store
from fedpers.server.api.db import open_api_db
from fedpers.server.api.ledger import subject_of, verify_ledger
from fedpers.server.tombstones import TombstoneReader, device_user_id

USER = "u-erase-me-7f3a"


def _cells_naming(db_path: Path, needles: list[str]) -> list[str]:
    """Every ``table.column`` of the database whose value contains one of ``needles``."""
    conn = sqlite3.connect(db_path)
    try:
        hits = []
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for column in columns:
                for needle in needles:
                    n = conn.execute(
                        f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE ?',
                        [f"%{needle}%"],
                    ).fetchone()[0]
                    if n:
                        hits.append(f"{table}.{column}")
        return hits
    finally:
        conn.close()


def _make_history(api: EngineApi, user: str, headers: dict[str, str] | None = None) -> None:
    api.grant_through_route(user, [1, 5, 6, 11], headers)
    api.post(f"/v1/users/{user}/consent/withdraw", {"purposes": [11]}, headers)
    api.post(f"/v1/users/{user}/objection", {"source": "web"}, headers)


def test_export_holds_the_consent_and_its_history(api: EngineApi) -> None:
    _make_history(api, USER)
    r = api.client.get(f"/v1/users/{USER}/export", headers={**api.serve_a, "Sec-GPC": "1"})
    assert r.status_code == 200, r.text
    export = r.json()
    assert export["user_id"] == USER and export["tenant"] == "shop-a"
    assert export["consent"]["granted"] == [1, 5, 6]
    assert export["consent"]["objection"] is True
    assert export["consent"]["gpc"] is True
    assert [e["action"] for e in export["consent_history"]] == ["grant", "withdraw", "object"]
    assert export["stored_elsewhere"] == []


def test_export_is_per_tenant(api: EngineApi) -> None:
    _make_history(api, USER)
    other = api.client.get(f"/v1/users/{USER}/export", headers=api.serve_b).json()
    assert other["tenant"] == "shop-b"
    assert other["consent"] is None and other["consent_history"] == []


def test_erasure_removes_every_trace_and_keeps_the_ledger_verifiable(api: EngineApi) -> None:
    _make_history(api, USER)
    api.grant_through_route("u-other", [1, 5, 6])
    subject = subject_of(api.ledger_key, USER)
    assert _cells_naming(api.db_path, [USER, subject])  # the probe can find the user

    r = api.client.delete(f"/v1/users/{USER}", headers=api.serve_a)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "user_id": USER,
        "erased": True,
        "already_erased": False,
        "consent_rows": 1,
        "ledger_entries_shredded": 4,  # grant, withdraw, object and the erase entry
    }
    assert _cells_naming(api.db_path, [USER, subject]) == []
    db = open_api_db(api.db_path)
    try:
        report = verify_ledger(db, api.ledger_key)
        assert report.ok, report.breaks
        assert report.shredded == {"shop-a": 4}
        assert consent_store.load_user_consent(db, "shop-a", "u-other").granted  # untouched
    finally:
        db.conn.close()
    view = api.client.get(f"/v1/users/{USER}/consent", headers=api.serve_a).json()
    assert view["erased"] is True and view["granted"] == []
    history = api.client.get(f"/v1/users/{USER}/consent/history", headers=api.serve_a).json()
    assert history["entries"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/users/{u}/consent/grant", {"purposes": [1, 5, 6]}),
        ("post", "/v1/users/{u}/consent/withdraw", {"purposes": [5]}),
        ("post", "/v1/users/{u}/objection", {}),
        ("delete", "/v1/users/{u}/objection", None),
        ("get", "/v1/users/{u}/export", None),
    ],
)
def test_later_writes_for_an_erased_id_are_410(
    api: EngineApi, method: str, path: str, body: object
) -> None:
    api.grant_through_route(USER, [1, 5, 6])
    assert api.client.delete(f"/v1/users/{USER}", headers=api.serve_a).status_code == 200
    kwargs = {"json": body} if body is not None else {}
    r = api.client.request(method.upper(), path.format(u=USER), headers=api.serve_a, **kwargs)
    assert r.status_code == 410, r.text
    assert "erased" in r.json()["detail"]
    db = open_api_db(api.db_path)
    try:
        assert consent_store.load_user_consent(db, "shop-a", USER).granted == frozenset()
        assert db.execute("SELECT COUNT(*) FROM consent_state").fetchone()[0] == 0
    finally:
        db.conn.close()


def test_erasure_is_idempotent_and_per_tenant(api: EngineApi) -> None:
    _make_history(api, USER)
    _make_history(api, USER, api.serve_b)
    assert api.client.delete(f"/v1/users/{USER}", headers=api.serve_a).status_code == 200
    again = api.client.delete(f"/v1/users/{USER}", headers=api.serve_a).json()
    assert again["already_erased"] is True and again["ledger_entries_shredded"] == 0
    in_b = api.client.get(f"/v1/users/{USER}/consent", headers=api.serve_b).json()
    assert in_b["erased"] is False and in_b["granted"] == [1, 5, 6]
    assert api.grant_through_route(USER, [10], api.serve_b)["granted"] == [1, 5, 6, 10]


def test_an_erasure_that_fails_half_way_writes_nothing(
    api: EngineApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_history(api, USER)

    def broken_shred(*args: object) -> int:
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(consent_store, "shred_subject", broken_shred)
    r = api.client.delete(f"/v1/users/{USER}", headers=api.serve_a)
    assert r.status_code == 500
    db = open_api_db(api.db_path)
    try:
        assert not consent_store.is_tombstoned(db, "shop-a", USER)
        consent = consent_store.load_user_consent(db, "shop-a", USER)
        assert consent.granted and consent.objection
        report = verify_ledger(db, api.ledger_key)
        assert report.ok and report.chains == {"shop-a": 3} and report.shredded == {"shop-a": 0}
    finally:
        db.conn.close()


def test_the_federation_reads_the_tombstone_of_an_erased_device(api: EngineApi) -> None:
    user = device_user_id(7)
    api.grant_through_route(user, [1, 5, 6, 10])
    reader = TombstoneReader(api.db_path)
    assert reader.erased([3, 7, 9]) == []
    assert api.client.delete(f"/v1/users/{user}", headers=api.serve_a).status_code == 200
    assert reader.erased([3, 7, 9]) == [7]
