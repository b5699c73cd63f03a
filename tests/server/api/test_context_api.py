"""Feedback with a context teaches the contextual ranking, and nothing else.

Through the app: what tenant A's visitors click at 21:00 moves those items up for A's
contextual answers at 21:00 only; another hour, another tenant, a personalised answer
and a popularity-only answer (P11 not granted) stay exactly as they were, and the
feedback's user id is stored nowhere.
"""

from __future__ import annotations

from typing import Any

EVENING = {"hour": 21}


def _items(api: Any, user: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    r = api.client.post(
        "/v1/recommendations",
        json={"user_id": user, "k": 5, "explain": True, **body},
        headers=headers or api.serve_a,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _feedback(api: Any, item: str, kind: str, times: int, **body: Any) -> None:
    for _ in range(times):
        r = api.client.post(
            "/v1/feedback", json={"item": item, "kind": kind, **body}, headers=api.serve_a
        )
        assert r.status_code == 202, r.text


def test_evening_clicks_lift_items_for_contextual_answers_in_the_evening_only(
    engine_api: Any,
) -> None:
    api = engine_api
    api.grant("alice", [1, 5, 6, 11])
    api.grant("pat", [1])  # neither profiling nor P11: popularity only
    vector = {"user_vector": [4.0, 0.0, 0.0, 0.0]}
    before = {
        "evening": _items(api, "visitor", context=EVENING),
        "morning": _items(api, "visitor", context={"hour": 9}),
        "tenant_b": _items(api, "visitor", api.serve_b, context=EVENING),
        "personal": _items(api, "alice", context=EVENING, personal_state=vector),
        "popular": _items(api, "pat", context=EVENING),
    }
    top = [i["item"] for i in before["evening"]["items"]]
    assert "i5" not in top  # a low-popularity item
    # i5 is clicked a lot in the evening; the most popular item is shown and ignored
    _feedback(api, "i5", "impression", 30, context=EVENING, user_id="visitor-secret-42")
    _feedback(api, "i5", "click", 20, context=EVENING)
    _feedback(api, top[0], "impression", 30, context=EVENING)
    _feedback(api, "i7", "click", 5)  # no context: counts for the item only

    evening = _items(api, "visitor", context=EVENING)
    assert evening["basis"] == "contextual"
    ranked = [i["item"] for i in evening["items"]]
    assert ranked[0] == "i5", ranked
    assert top[0] not in ranked[:2]
    assert "hour=21" in evening["items"][0]["explanation"]
    for name, again in (
        ("morning", _items(api, "visitor", context={"hour": 9})),
        ("tenant_b", _items(api, "visitor", api.serve_b, context=EVENING)),
        ("personal", _items(api, "alice", context=EVENING, personal_state=vector)),
        ("popular", _items(api, "pat", context=EVENING)),
    ):
        assert again["basis"] == before[name]["basis"], name
        assert [i["item"] for i in again["items"]] == [i["item"] for i in before[name]["items"]], (
            name
        )
    # aggregate counters only: the user id sent with the feedback is in no file
    stored = b"".join(
        p.read_bytes() for p in api.db_path.parent.glob(api.db_path.name + "*") if p.is_file()
    )
    assert b"visitor-secret-42" not in stored


def test_feedback_context_is_validated(engine_api: Any) -> None:
    for context in ({"hour": 24}, {"locale": "not a locale"}, {"mood": "happy"}, "evening"):
        r = engine_api.client.post(
            "/v1/feedback",
            json={"item": "i5", "kind": "click", "context": context},
            headers=engine_api.serve_a,
        )
        assert r.status_code == 422, (context, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
