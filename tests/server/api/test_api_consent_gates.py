"""Try to get personalised output from ``POST /v1/recommendations`` past the consent gates.

Each attack sends the device's personal state (a user vector that would reorder the
ranking, or events) and must get a non-personalised answer that the state did not
change: without consent, with part of it, across tenants, after a withdrawal, after an
objection, after an erasure and with ``Sec-GPC: 1``. The first test shows the same state
*does* personalise when every gate is open, so the attacks could succeed if a gate leaked.
"""

from __future__ import annotations

from typing import Any

import pytest
from served_app import EngineApi

USER = "u-gate"
ALL = [1, 5, 6, 10, 11]
VECTOR = {"user_vector": [0.0, 5.0, 0.0, 0.0]}  # points at items i20..i39
EVENTS = {"events": [{"item": f"i{k}", "kind": "click"} for k in (20, 21, 22)]}


def _recommend(
    api: EngineApi,
    user: str = USER,
    state: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user, "k": 8, "context": {"hour": 21}}
    if state is not None:
        body["personal_state"] = state
    r = api.post("/v1/recommendations", body, headers)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _ranking(answer: dict[str, Any]) -> list[tuple[str, float]]:
    return [(item["item"], item["score"]) for item in answer["items"]]


def _assert_refused(
    api: EngineApi, user: str = USER, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The state is sent and must neither personalise nor change the answer."""
    plain = _recommend(api, user, None, headers)
    for state in (VECTOR, EVENTS):
        answer = _recommend(api, user, state, headers)
        assert answer["personalised"] is False, answer["reason"]
        assert answer["basis"] in ("contextual", "popular")
        assert _ranking(answer) == _ranking(plain)
    return plain


def test_the_state_personalises_when_every_gate_is_open(api: EngineApi) -> None:
    api.grant_through_route(USER, ALL)
    plain = _recommend(api)
    for state in (VECTOR, EVENTS):
        answer = _recommend(api, state=state)
        assert answer["personalised"] is True and answer["basis"] == "personalised"
        assert _ranking(answer) != _ranking(plain)
    top = _recommend(api, state=VECTOR)["items"][0]["item"]
    assert 20 <= int(top[1:]) <= 39


def test_without_any_consent(api: EngineApi) -> None:
    answer = _assert_refused(api)
    assert "unknown user" in answer["reason"]


@pytest.mark.parametrize("granted", [[1, 5], [1, 6], [5, 6], [10, 11], [11]])
def test_with_only_part_of_p1_p5_p6(api: EngineApi, granted: list[int]) -> None:
    api.grant_through_route(USER, granted)
    answer = _assert_refused(api)
    assert "not granted" in answer["reason"]


def test_across_tenants(api: EngineApi) -> None:
    api.grant_through_route(USER, ALL)  # tenant A
    _assert_refused(api, headers=api.serve_b)
    api.grant_through_route("u-only-b", ALL, api.serve_b)
    _assert_refused(api, "u-only-b")


def test_ids_are_exact(api: EngineApi) -> None:
    api.grant_through_route(USER.upper(), ALL)
    api.grant_through_route(USER + " ", ALL)
    _assert_refused(api)


@pytest.mark.parametrize("purpose", [1, 5, 6])
def test_after_withdrawal(api: EngineApi, purpose: int) -> None:
    api.grant_through_route(USER, ALL)
    assert _recommend(api, state=VECTOR)["personalised"] is True
    r = api.post(f"/v1/users/{USER}/consent/withdraw", {"purposes": [purpose]})
    assert r.status_code == 200
    answer = _assert_refused(api)
    assert f"P{purpose}" in answer["reason"]


def test_after_objection_until_it_is_lifted(api: EngineApi) -> None:
    api.grant_through_route(USER, ALL)
    assert api.post(f"/v1/users/{USER}/objection", {"source": "web"}).status_code == 200
    answer = _assert_refused(api)
    assert "objected" in answer["reason"]
    api.grant_through_route(USER, ALL)  # granting again does not lift an objection
    _assert_refused(api)
    assert api.client.delete(f"/v1/users/{USER}/objection", headers=api.serve_a).status_code == 200
    assert _recommend(api, state=VECTOR)["personalised"] is True


def test_after_erasure(api: EngineApi) -> None:
    api.grant_through_route(USER, ALL)
    assert api.client.delete(f"/v1/users/{USER}", headers=api.serve_a).status_code == 200
    answer = _assert_refused(api)
    assert answer["basis"] == "popular" and "erased" in answer["reason"]
    regrant = api.post(f"/v1/users/{USER}/consent/grant", {"purposes": ALL})
    assert regrant.status_code == 410
    _assert_refused(api)


def test_with_sec_gpc(api: EngineApi) -> None:
    api.grant_through_route(USER, ALL)
    gpc = {**api.serve_a, "Sec-GPC": "1"}
    answer = _assert_refused(api, headers=gpc)
    assert "Sec-GPC" in answer["reason"]
    # a grant sent with GPC does not override it
    assert api.grant_through_route(USER, ALL, gpc)["gpc"] is True
    _assert_refused(api, headers=gpc)
    assert _recommend(api, state=VECTOR)["personalised"] is True  # GPC is per request


def test_a_withdrawal_is_seen_by_the_very_next_request(api: EngineApi) -> None:
    def check() -> bool:
        return bool(_recommend(api, state=VECTOR)["personalised"])

    for _ in range(3):
        api.grant_through_route(USER, ALL)
        assert check() is True
        api.post(f"/v1/users/{USER}/consent/withdraw", {"purposes": [6]})
        assert check() is False
