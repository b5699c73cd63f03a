"""The consent routes: grant, withdraw, read, objection, history, GPC, bad input."""

from __future__ import annotations

import re

import pytest
from served_app import EngineApi

from fedpers.server.api.db import open_api_db
from fedpers.server.api.ledger import verify_ledger


def _metric(api: EngineApi, action: str, purpose: str) -> float:
    text = api.client.get("/metrics").text
    labels = f'action="{re.escape(action)}",purpose="{re.escape(purpose)}"'
    pattern = rf"^fedpers_api_consent_decisions_total\{{{labels}\}} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_unknown_user_reads_as_nothing_granted(api: EngineApi) -> None:
    r = api.client.get("/v1/users/u-new/consent", headers=api.serve_a)
    assert r.status_code == 200
    assert r.json() == {
        "user_id": "u-new",
        "granted": [],
        "objection": False,
        "policy_version": None,
        "source": None,
        "updated_at": None,
        "gpc": False,
        "erased": False,
    }


def test_grant_then_withdraw_is_seen_by_the_next_read(api: EngineApi) -> None:
    view = api.grant_through_route("u-1", [1, 5, 6, 11])
    assert view["granted"] == [1, 5, 6, 11]
    assert view["policy_version"] == "v1" and view["source"] == "test"
    assert view["updated_at"] is not None
    r = api.post("/v1/users/u-1/consent/withdraw", {"purposes": ["P6"], "policy_version": "v2"})
    assert r.status_code == 200, r.text
    assert r.json()["granted"] == [1, 5, 11]
    read = api.client.get("/v1/users/u-1/consent", headers=api.serve_a).json()
    assert read["granted"] == [1, 5, 11]
    assert read["policy_version"] == "v2"


def test_labels_and_names_are_accepted_like_on_the_device(api: EngineApi) -> None:
    r = api.post("/v1/users/u-2/consent/grant", {"purposes": ["P1", "create-profiles", 6]})
    assert r.status_code == 200, r.text
    assert r.json()["granted"] == [1, 5, 6]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"purposes": [7]}, "TCF purpose 7 is not used"),
        ({"purposes": [99]}, "not a consent purpose"),
        ({"purposes": ["P42"]}, "not a consent purpose"),
        ({"purposes": [True]}, "purposes"),
        ({"purposes": [1.0]}, "purposes"),
        ({"purposes": []}, "purposes"),
        ({}, "purposes"),
        ({"purposes": [1], "colour": "red"}, "colour"),
        ({"purposes": [1], "policy_version": "x" * 65}, "policy_version"),
    ],
)
def test_bad_consent_bodies_are_422_naming_the_problem(
    api: EngineApi, body: dict[str, object], fragment: str
) -> None:
    r = api.post("/v1/users/u-3/consent/grant", body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert fragment in r.text
    read = api.client.get("/v1/users/u-3/consent", headers=api.serve_a).json()
    assert read["granted"] == [] and read["updated_at"] is None  # nothing half-written


def test_user_id_bounds(api: EngineApi) -> None:
    r = api.client.get("/v1/users/" + "x" * 129 + "/consent", headers=api.serve_a)
    assert r.status_code == 422
    assert "user_id" in r.text


def test_only_grant_and_withdraw_change_consent(api: EngineApi) -> None:
    body = {"purposes": [1], "policy_version": "v1", "source": "t"}
    for action in ("revoke", "object", "GRANT"):
        r = api.post(f"/v1/users/u-1/consent/{action}", body)
        assert r.status_code == 422, (action, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "grant" in r.text and "withdraw" in r.text
    assert api.client.get("/v1/users/u-1/consent", headers=api.serve_a).json()["granted"] == []


def test_no_key_is_401(api: EngineApi) -> None:
    assert api.client.get("/v1/users/u-1/consent").status_code == 401
    r = api.client.post("/v1/users/u-1/consent/grant", json={"purposes": [1]})
    assert r.status_code == 401


def test_objection_is_its_own_call_and_can_be_lifted(api: EngineApi) -> None:
    api.grant_through_route("u-4", [1, 5, 6])
    r = api.post("/v1/users/u-4/objection", {"source": "privacy-center"})
    assert r.status_code == 200, r.text
    assert r.json()["objection"] is True
    assert r.json()["granted"] == [1, 5, 6]  # consent is kept; profiling is refused
    assert api.client.post("/v1/users/u-4/objection", headers=api.serve_a).status_code == 200
    lifted = api.client.delete("/v1/users/u-4/objection", headers=api.serve_a)
    assert lifted.status_code == 200
    assert lifted.json()["objection"] is False


def test_tenants_never_see_or_change_each_other(api: EngineApi) -> None:
    api.grant_through_route("u-5", [1, 5, 6])
    seen_by_b = api.client.get("/v1/users/u-5/consent", headers=api.serve_b).json()
    assert seen_by_b["granted"] == [] and seen_by_b["updated_at"] is None
    api.post("/v1/users/u-5/objection", {}, api.serve_b)
    assert api.client.get("/v1/users/u-5/consent", headers=api.serve_a).json()["objection"] is False
    history_b = api.client.get("/v1/users/u-5/consent/history", headers=api.serve_b).json()
    assert [e["action"] for e in history_b["entries"]] == ["object"]


def test_history_lists_every_decision_in_order(api: EngineApi) -> None:
    api.grant_through_route("u-6", [1, 5, 6])
    api.post("/v1/users/u-6/consent/withdraw", {"purposes": [6], "source": "app"})
    api.post("/v1/users/u-6/objection", {"source": "web"})
    api.client.delete("/v1/users/u-6/objection", headers=api.serve_a)
    entries = api.client.get("/v1/users/u-6/consent/history", headers=api.serve_a).json()["entries"]
    assert [e["action"] for e in entries] == ["grant", "withdraw", "object", "lift_objection"]
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
    assert entries[0]["purposes"] == [1, 5, 6] and entries[1]["purposes"] == [6]
    assert entries[1]["source"] == "app"
    db = open_api_db(api.db_path)
    try:
        report = verify_ledger(db, api.ledger_key)
    finally:
        db.conn.close()
    assert report.ok and report.chains == {"shop-a": 4}


def test_gpc_is_reported_and_counted_on_every_consent_call(api: EngineApi) -> None:
    gpc = {**api.serve_a, "Sec-GPC": "1"}
    before = _metric(api, "gpc", "all")
    assert api.client.get("/v1/users/u-7/consent", headers=gpc).json()["gpc"] is True
    assert api.grant_through_route("u-7", [1, 5, 6], gpc)["gpc"] is True
    assert api.client.get("/v1/users/u-7/consent", headers=api.serve_a).json()["gpc"] is False
    assert _metric(api, "gpc", "all") == before + 2


def test_grants_and_withdrawals_are_counted_per_purpose(api: EngineApi) -> None:
    p5, p6 = _metric(api, "grant", "P5"), _metric(api, "withdraw", "P6")
    api.grant_through_route("u-8", [1, 5])
    api.post("/v1/users/u-8/consent/withdraw", {"purposes": [6]})
    assert _metric(api, "grant", "P5") == p5 + 1
    assert _metric(api, "withdraw", "P6") == p6 + 1
    text = api.client.get("/metrics").text
    assert "u-8" not in text  # no user id in any label
