"""API keys: hashed at rest, scoped, tenant-isolated, revocable and rate-limited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.privacy.errors import DataError
from fedpers.server.api.auth import (
    ApiKey,
    RateLimiter,
    authenticate,
    create_api_key,
    list_api_keys,
    revoke_api_key,
    take_token,
)
from fedpers.server.api.db import open_api_db
from fedpers.server.api.errors import AuthenticationError, NotFoundError, RateLimitedError

EXPERIMENT = {"id": "exp-1", "variants": [{"name": "control", "weight": 1.0}]}


def test_the_secret_is_never_stored(tmp_path: Path) -> None:
    db = open_api_db(tmp_path / "api.db")
    key, secret = create_api_key(db, "shop-a", ["serve"], name="web")
    db.conn.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("api.db"))
    assert secret.encode() not in raw
    assert secret.rsplit("_", 1)[-1].encode() not in raw
    assert key.key_id.encode() in raw  # the public id is what is stored in clear
    listed = list_api_keys(open_api_db(tmp_path / "api.db"))
    assert [k.public() for k in listed] == [key.public()]
    assert "key" not in listed[0].public() and secret not in str(listed[0].public())


def test_only_the_exact_live_key_authenticates(tmp_path: Path) -> None:
    db = open_api_db(tmp_path / "api.db")
    key, secret = create_api_key(db, "shop-a", ["serve"])
    assert authenticate(db, secret) == key
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")  # right id, wrong secret
    for bad in (None, "", "nonsense", forged, secret.replace(key.key_id, "0" * 12)):
        with pytest.raises(AuthenticationError):
            authenticate(db, bad)
    revoke_api_key(db, key.key_id)
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        authenticate(db, secret)


def test_bad_key_requests_are_refused(tmp_path: Path) -> None:
    db = open_api_db(tmp_path / "api.db")
    with pytest.raises(DataError, match="scopes"):
        create_api_key(db, "shop-a", ["root"])
    with pytest.raises(DataError, match="scopes"):
        create_api_key(db, "shop-a", [])
    with pytest.raises(DataError, match="tenant"):
        create_api_key(db, "Shop A!", ["serve"])
    with pytest.raises(NotFoundError):
        revoke_api_key(db, "000000000000")
    key, _ = create_api_key(db, "shop-a", ["serve"])
    with pytest.raises(NotFoundError):  # a tenant cannot revoke another tenant's key
        revoke_api_key(db, key.key_id, tenant="shop-b")


def test_admin_includes_serve_but_not_the_other_way() -> None:
    serve = ApiKey("a" * 12, "t", frozenset({"serve"}))
    admin = ApiKey("b" * 12, "t", frozenset({"admin"}))
    assert serve.has_scope("serve") and not serve.has_scope("admin")
    assert admin.has_scope("serve") and admin.has_scope("admin")


def test_http_keys_scopes_and_revocation(engine_api: Any) -> None:
    c = engine_api.client
    assert c.get("/v1/items").status_code == 401
    r = c.get("/v1/items", headers={"Authorization": "Bearer fpk_000000000000_" + "x" * 43})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == "Bearer"
    x_api_key = {"X-API-Key": engine_api.serve_a["Authorization"].split()[1]}
    assert c.get("/v1/items", headers=x_api_key).status_code == 200
    r = c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.serve_a)
    assert r.status_code == 403 and "'admin' scope" in r.json()["detail"]
    assert c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.admin_a).status_code == 201
    db = open_api_db(engine_api.db_path)
    secret = engine_api.serve_b["Authorization"].split()[1]
    revoke_api_key(db, authenticate(db, secret).key_id)
    assert c.get("/v1/items", headers=engine_api.serve_b).status_code == 401


def test_a_tenant_never_sees_another_tenants_experiment(engine_api: Any) -> None:
    c = engine_api.client
    assert c.post("/v1/experiments", json=EXPERIMENT, headers=engine_api.admin_a).status_code == 201
    assert c.get("/v1/experiments/exp-1", headers=engine_api.serve_a).status_code == 200
    r = c.get("/v1/experiments/exp-1", headers=engine_api.serve_b)
    assert r.status_code == 404
    body = {**EXPERIMENT, "variants": [{"name": "b-only", "weight": 1.0}]}
    assert c.post("/v1/experiments", json=body, headers=engine_api.admin_a).status_code == 409
    assert (
        c.get("/v1/experiments/exp-1", headers=engine_api.serve_a).json()["variants"][0]["name"]
        == "control"
    )


def test_rate_limit_answers_429_with_retry_after(engine_api: Any) -> None:
    engine_api.client.app.state.rate_limiter = RateLimiter(rate_per_s=0.5, burst=3)
    codes = [engine_api.client.get("/v1/items", headers=engine_api.serve_a) for _ in range(5)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    late = codes[3]
    assert late.headers["content-type"] == "application/problem+json"
    assert int(late.headers["retry-after"]) in (1, 2)
    assert "rate limit" in late.json()["detail"]
    # another key has its own bucket
    assert engine_api.client.get("/v1/items", headers=engine_api.serve_b).status_code == 200


def test_limiter_refills_with_time() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=2)
    key = ApiKey("c" * 12, "t", frozenset({"serve"}))
    limiter.check(key, now=0.0)
    limiter.check(key, now=0.0)
    with pytest.raises(RateLimitedError) as caught:
        limiter.check(key, now=0.1)
    assert caught.value.retry_after_s == 1
    limiter.check(key, now=0.6)  # 0.5 s later one token is back
    own = ApiKey("d" * 12, "t", frozenset({"serve"}), rate_per_s=0.0)  # per-key: unlimited
    for _ in range(50):
        limiter.check(own, now=0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 100.0),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=200),
)
def test_a_bucket_never_allows_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    tokens, last, now, allowed = float(burst), 0.0, 0.0, 0
    for gap in gaps:
        now += gap
        ok, tokens, wait = take_token(tokens, last, now, rate, burst)
        last = now
        allowed += ok
        assert 0.0 <= tokens <= burst
        assert (wait == 0.0) == ok and wait >= 0.0
    assert allowed <= burst + rate * now + 1e-6
