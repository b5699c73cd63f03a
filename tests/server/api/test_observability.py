"""Metrics and access logs: the contract's names, route templates, never personal data."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from fedpers.server.api.observability import ACCESS_LOGGER, JsonFormatter

USER = "user-7f3a9c-secret"
VECTOR = [0.731234, -0.291847, 0.118273, 0.554321]
EVENT_ITEM = "i23"


def _json_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    fmt = JsonFormatter()
    return [json.loads(fmt.format(r)) for r in caplog.records]


def test_one_json_access_line_per_request_with_the_route_template(
    engine_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        r = engine_api.client.get("/healthz", headers={"x-request-id": "req-abc-1"})
        engine_api.client.get(f"/v1/users/{USER}/consent", headers=engine_api.serve_a)
    assert r.headers["x-request-id"] == "req-abc-1"
    lines = [line for line in _json_lines(caplog) if line["logger"] == ACCESS_LOGGER]
    assert len(lines) == 2
    first, second = lines
    assert first["route"] == "/healthz" and first["status"] == 200
    assert first["request_id"] == "req-abc-1" and first["latency_ms"] >= 0
    assert second["tenant"] == "shop-a" and second["key_id"]
    assert USER not in json.dumps(lines)
    assert second["route"] == "/v1/users/{user_id}/consent" and second["status"] == 200


def test_a_bad_request_id_is_replaced(engine_api: Any) -> None:
    r = engine_api.client.get("/healthz", headers={"x-request-id": "x" * 200})
    assert r.headers["x-request-id"] != "x" * 200 and len(r.headers["x-request-id"]) == 32


def test_personal_state_and_user_ids_never_reach_logs_or_metrics(
    engine_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine_api.grant(USER, [1, 5, 6, 11])
    states = [
        {"user_vector": VECTOR},
        {"events": [{"item": EVENT_ITEM, "kind": "click", "at": 1234567890.5}]},
    ]
    with caplog.at_level(logging.DEBUG):
        for state in states:
            r = engine_api.client.post(
                "/v1/recommendations",
                json={"user_id": USER, "k": 3, "personal_state": state},
                headers=engine_api.serve_a,
            )
            assert r.status_code == 200, r.text
            assert r.json()["personalised"] is True
        metrics = engine_api.client.get("/metrics").text
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in [USER, "1234567890.5", *(str(v) for v in VECTOR), *(f"{v:.4f}" for v in VECTOR)]:
        assert secret not in logged, secret
        assert secret not in metrics, secret
    assert 'fedpers_api_recommendations_total{basis="personalised"}' in metrics


def test_contract_metrics_are_exposed(engine_api: Any) -> None:
    engine_api.client.post(
        "/v1/recommendations", json={"user_id": "u", "k": 2}, headers=engine_api.serve_a
    )
    engine_api.client.get("/v1/items", headers={**engine_api.serve_a, "Sec-GPC": "1"})
    r = engine_api.client.post(
        "/v1/recommendations",
        json={"user_id": "u", "k": 2},
        headers={**engine_api.serve_a, "Sec-GPC": "1"},
    )
    assert r.status_code == 200 and r.json()["personalised"] is False
    r = engine_api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'fedpers_api_request_seconds_bucket{le="0.01",method="POST",' in text
    assert 'route="/v1/recommendations",status="200"' in text
    assert "fedpers_api_model_version 1.0" in text
    assert 'fedpers_api_consent_decisions_total{action="gpc",purpose="all"}' in text
    assert "fedpers_api_recommendations_total{basis=" in text


def test_readyz_is_503_until_a_model_is_loaded(engine_api: Any) -> None:
    assert engine_api.client.get("/readyz").json() == {"status": "ready", "model_version": 1}
    holder = engine_api.client.app.state.model_holder
    served, holder._served = holder._served, None
    try:
        r = engine_api.client.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert engine_api.client.get("/healthz").status_code == 200
    finally:
        holder._served = served


def test_docs_page_is_served(engine_api: Any) -> None:
    r = engine_api.client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
