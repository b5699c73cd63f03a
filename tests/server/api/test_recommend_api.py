"""POST /v1/recommendations through the app.

Consent gates it tries to get past, the state that must never be kept, and bad input.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

VECTOR = [4.0, 0.0, 0.0, 0.0]  # points at the items 0-19 (the popular ones are 34-38)
EVENTS = [{"item": f"i{j}", "kind": "click", "at": 1111111111.25 + j} for j in (21, 22, 23, 24)]
ALL = [1, 5, 6, 11]


def rec(api: Any, user: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    payload = {"user_id": user, "k": 5, **body}
    return api.client.post("/v1/recommendations", json=payload, headers=headers or api.serve_a)


def with_vector(api: Any, user: str, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    return rec(api, user, headers, personal_state={"user_vector": VECTOR}, **extra)


def test_personalised_with_consent_and_state(engine_api: Any) -> None:
    engine_api.grant("alice", ALL)
    r = with_vector(engine_api, "alice", explain=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalised"] is True and body["basis"] == "personalised"
    assert body["reason"] == "P1, P5 and P6 granted and a local user vector was sent"
    assert body["model"]["version"] == 1 and len(body["model"]["sha256"]) == 64
    assert all(int(i["item"][1:]) < 20 for i in body["items"]), body["items"]
    assert body["items"][0]["title"].startswith("Title i")
    r = rec(engine_api, "alice", personal_state={"events": EVENTS})
    got = [i["item"] for i in r.json()["items"]]
    assert r.json()["personalised"] and not set(got) & {"i21", "i22", "i23", "i24"}
    assert all(20 <= int(i[1:]) < 39 for i in got), got


def _popular_items(api: Any) -> list[str]:
    r = rec(api, "nobody-knows-me")
    return [i["item"] for i in r.json()["items"]]


@pytest.mark.parametrize(
    "case", ["no_consent", "gpc", "withdrawn", "objection", "erased", "other_tenant", "unknown"]
)
def test_no_personalised_output_without_every_condition(engine_api: Any, case: str) -> None:
    api = engine_api
    headers = dict(api.serve_a)
    user = "bob"
    if case == "no_consent":
        api.grant(user, [1, 11])  # P5 and P6 missing
    else:
        api.grant(user, ALL)
    if case == "gpc":
        headers["Sec-GPC"] = "1"
    elif case in ("withdrawn", "objection", "erased"):
        action = {"withdrawn": "withdraw", "objection": "object", "erased": "erase"}[case]
        api.consent(action, user, [6])
    elif case == "other_tenant":
        headers = dict(api.serve_b)  # tenant B asks about tenant A's consenting user
    elif case == "unknown":
        user = "carol"
    r = with_vector(api, user, headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalised"] is False and body["basis"] != "personalised"
    assert "not used" in body["reason"]
    # The answer is exactly the non-profiled ranking: the vector changed nothing.
    items = [i["item"] for i in body["items"]]
    assert items == _popular_items(api)
    assert not any(int(i[1:]) < 20 for i in items)
    if case == "erased":
        assert body["basis"] == "popular"


def test_unknown_user_and_cold_start_get_context_not_profile(engine_api: Any) -> None:
    r = rec(engine_api, "new-user", context={"device": "mobile", "hour": 21, "locale": "en-US"})
    body = r.json()
    assert body["basis"] == "contextual" and "unknown user" in body["reason"]
    engine_api.grant("dave", ALL)
    body = rec(engine_api, "dave").json()
    assert body["basis"] == "contextual" and "cold start" in body["reason"]
    engine_api.grant("erin", [1, 5, 6])  # no P11: popularity only
    assert rec(engine_api, "erin").json()["basis"] == "popular"


def test_personal_state_is_never_stored_logged_or_counted(
    engine_api: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedpers.server.api.observability import ACCESS_LOGGER, JsonFormatter

    monkeypatch.setattr(logging.getLogger("fedpers"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    engine_api.grant("frank", ALL)
    marker_vector = [0.7316492801, 0.1938475629, 0.5820174639, 0.3482910563]
    marker_at = 1357913579.8642
    events = [{"item": "i7", "kind": "click", "at": marker_at}, {"item": "i8", "kind": "view"}]
    for state in ({"user_vector": marker_vector}, {"events": events}):
        r = rec(engine_api, "frank", personal_state=state, explain=True)
        assert r.status_code == 200 and r.json()["personalised"]
    metrics = engine_api.client.get("/metrics").text
    assert 'basis="personalised"' in metrics
    needles = [repr(x) for x in marker_vector] + [str(marker_at), "1357913579"]
    needles += [repr(x)[:8] for x in marker_vector]  # also any shortened rendering
    assert any(r.name == ACCESS_LOGGER for r in caplog.records)  # the logs were captured
    formatter = JsonFormatter()
    logs = caplog.text + "\n".join(str(r.__dict__) + formatter.format(r) for r in caplog.records)
    files = sorted(engine_api.db_path.parent.glob(engine_api.db_path.name + "*"))
    assert any(f.name.endswith("-wal") for f in files) or files
    blobs = b"".join(f.read_bytes() for f in files if f.is_file())
    for needle in needles:
        assert needle not in logs, needle
        assert needle not in metrics, needle
        assert needle.encode() not in blobs, needle
    # The events' items were not turned into a per-user row either: no table holds 'i7'
    # next to the user id (the item counters are fed by /v1/feedback only).
    assert b"frank" not in blobs or b"i7" not in blobs


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"k": 0}, "k"),
        ({"k": 100000}, "k"),
        ({"k": "ten"}, "k"),
        ({"user_id": ""}, "user_id"),
        ({"personal_state": {"user_vector": [1.0, 2.0]}}, "has 2 values, the model needs 4"),
        ({"personal_state": {"events": [{"item": "nope"}]}}, "'nope'"),
        ({"personal_state": {}}, "user_vector or events"),
        ({"filters": {"exclude_items": ["zzz"]}}, "'zzz'"),
        ({"filters": {"categories": ["Horror"]}}, "Horror"),
        ({"context": {"hour": 24}}, "hour"),
        ({"diversity": 2}, "diversity"),
        ({"surprise": 1}, "surprise"),
        ({"experiment": "missing"}, "missing"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what(
    engine_api: Any, body: dict[str, Any], fragment: str
) -> None:
    engine_api.grant("gina", ALL)
    r = (
        rec(engine_api, "gina", **body)
        if "user_id" not in body
        else engine_api.client.post(
            "/v1/recommendations", json={"k": 5, **body}, headers=engine_api.serve_a
        )
    )
    assert 400 <= r.status_code < 500, r.text
    assert fragment in r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_nan_and_missing_fields_and_wrong_types(engine_api: Any) -> None:
    c = engine_api.client
    bad = b'{"user_id": "u", "personal_state": {"user_vector": [NaN, 1, 2, 3]}}'
    headers = {**engine_api.serve_a, "Content-Type": "application/json"}
    r = c.post("/v1/recommendations", content=bad, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    r = c.post("/v1/recommendations", json={"k": 3}, headers=engine_api.serve_a)
    assert r.status_code == 422 and "user_id" in r.text
    r = c.post("/v1/recommendations", content=b"{not json", headers=headers)
    assert 400 <= r.status_code < 500
    r = c.post("/v1/recommendations", json={"user_id": "u"})
    assert r.status_code == 401


def test_diversity_and_exploration_through_the_api(engine_api: Any) -> None:
    r = rec(engine_api, "hank", k=10, exploration=0.3, diversity=0.5)
    items = r.json()["items"]
    assert [i["explored"] for i in items] == [False] * 7 + [True] * 3
    assert len({i["item"] for i in items}) == 10


def test_large_catalogue_path_ranks_in_a_worker_thread_with_the_same_answer(
    engine_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fedpers.server.api.routes import recommendations as route

    engine_api.grant("alice", ALL)
    inline = with_vector(engine_api, "alice", explain=True).json()
    monkeypatch.setattr(route, "INLINE_WORK", 0)  # every catalogue counts as large
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: with_vector(engine_api, "alice", explain=True), range(8)))
    for r in answers:
        assert r.status_code == 200, r.text
        assert r.json()["items"] == inline["items"]
