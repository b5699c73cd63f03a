"""Experiments and feedback through the app: scopes, tenants, counters, intervals."""

from __future__ import annotations

from typing import Any

from fedpers.server.api.experiments import wilson_interval

EXPERIMENT = {
    "id": "exp-1",
    "variants": [
        {"name": "control", "weight": 1, "exploration": 0.0},
        {"name": "treatment", "weight": 1, "exploration": 0.5, "diversity": 0.3},
    ],
}


def test_create_needs_admin_and_is_per_tenant(engine_api: Any) -> None:
    c = engine_api.client
    assert c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.serve_a).status_code == 403
    r = c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.admin_a)
    assert r.status_code == 201, r.text
    assert [v["name"] for v in r.json()["variants"]] == ["control", "treatment"]
    assert c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.admin_a).status_code == 409
    assert c.get("/v1/experiments/exp-1", headers=engine_api.serve_a).status_code == 200
    r = c.get("/v1/experiments/exp-1", headers=engine_api.serve_b)
    assert r.status_code == 404 and "exp-1" in r.json()["detail"]
    bad = {"id": "x", "variants": [{"name": "a", "weight": -1}]}
    assert c.post("/v1/experiments", json=bad, headers=engine_api.admin_a).status_code == 422
    dup = {"id": "y", "variants": [{"name": "a"}, {"name": "a"}]}
    r = c.post("/v1/experiments", json=dup, headers=engine_api.admin_a)
    assert r.status_code == 422 and "unique" in r.text


def test_assignment_variant_settings_feedback_and_report(engine_api: Any) -> None:
    c = engine_api.client
    c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.admin_a)
    seen: dict[str, str] = {}
    for n in range(40):
        user = f"user-{n}"
        r = c.post(
            "/v1/recommendations",
            json={"user_id": user, "k": 4, "experiment": "exp-1"},
            headers=engine_api.serve_a,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        variant = body["experiment"]["variant"]
        seen[user] = variant
        explored = sum(i["explored"] for i in body["items"])
        assert explored == (2 if variant == "treatment" else 0)
        again = c.post(
            "/v1/recommendations",
            json={"user_id": user, "k": 4, "experiment": "exp-1"},
            headers=engine_api.serve_a,
        )
        assert again.json()["experiment"]["variant"] == variant  # deterministic
    assert set(seen.values()) == {"control", "treatment"}
    control_user = next(u for u, v in seen.items() if v == "control")
    for kind, times in (("impression", 8), ("click", 3), ("conversion", 1)):
        for _ in range(times):
            r = c.post(
                "/v1/feedback",
                json={"item": "i3", "kind": kind, "experiment": "exp-1", "user_id": control_user},
                headers=engine_api.serve_a,
            )
            assert r.status_code == 202, r.text
            assert r.json()["variant"] == "control"
    r = c.post(
        "/v1/feedback",
        json={"item": "i3", "kind": "impression", "experiment": "exp-1", "variant": "treatment"},
        headers=engine_api.serve_a,
    )
    assert r.status_code == 202
    report = c.get("/v1/experiments/exp-1", headers=engine_api.serve_a).json()
    control, treatment = report["variants"]
    assert (control["impressions"], control["clicks"], control["conversions"]) == (8, 3, 1)
    assert control["ctr"]["value"] == 3 / 8
    assert control["ctr"]["ci95"] == list(wilson_interval(3, 8))
    assert control["conversion_rate"]["ci95"] == list(wilson_interval(1, 8))
    assert treatment["impressions"] == 1 and treatment["ctr"]["value"] == 0.0


def test_feedback_bad_input(engine_api: Any) -> None:
    c = engine_api.client
    h = engine_api.serve_a
    cases = [
        ({"item": "nope", "kind": "click"}, 422, "nope"),
        ({"item": "i1", "kind": "like"}, 422, "kind"),
        ({"item": "i1", "kind": "click", "experiment": "none"}, 404, "none"),
        ({"item": "i1", "kind": "click", "variant": "a"}, 422, "variant"),
        ({"kind": "click"}, 422, "item"),
    ]
    for body, status, fragment in cases:
        r = c.post("/v1/feedback", json=body, headers=h)
        assert r.status_code == status, (body, r.text)
        assert fragment in r.text
    c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.admin_a)
    r = c.post(
        "/v1/feedback",
        json={"item": "i1", "kind": "click", "experiment": "exp-1", "variant": "zzz"},
        headers=h,
    )
    assert r.status_code == 422 and "zzz" in r.text
    r = c.post(
        "/v1/feedback", json={"item": "i1", "kind": "click", "experiment": "exp-1"}, headers=h
    )
    assert r.status_code == 422 and "user_id" in r.text
