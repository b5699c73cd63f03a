"""GET /v1/model, its download (ETag / If-None-Match), the report and /v1/items."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np


def test_model_info_and_privacy(engine_api: Any) -> None:
    r = engine_api.client.get("/v1/model", headers=engine_api.serve_a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version"], body["round"], body["n_items"], body["dim"]) == (1, 1, 40, 4)
    assert body["download"] == "/v1/model/download"
    privacy = body["privacy"]
    assert privacy["epsilon"] == 1.5 and privacy["delta"] == 1e-4
    assert (privacy["unit"], privacy["accountant"], privacy["mechanism"]) == (
        "user",
        "rdp",
        "gaussian",
    )
    assert engine_api.client.get("/v1/model").status_code == 401


def test_download_with_etag_and_304(engine_api: Any) -> None:
    c = engine_api.client
    info = c.get("/v1/model", headers=engine_api.serve_a).json()
    r = c.get("/v1/model/download", headers=engine_api.serve_a)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == info["sha256"]
    assert r.headers["etag"] == f'"{info["sha256"]}"'
    with np.load(io.BytesIO(r.content), allow_pickle=False) as data:
        assert len(data["item_ids"]) == 40
    again = c.get(
        "/v1/model/download",
        headers={**engine_api.serve_a, "If-None-Match": r.headers["etag"]},
    )
    assert again.status_code == 304 and again.content == b""
    stale = c.get("/v1/model/download", headers={**engine_api.serve_a, "If-None-Match": '"x"'})
    assert stale.status_code == 200


def test_report_before_and_after_audit(engine_api: Any) -> None:
    c = engine_api.client
    r = c.get("/v1/model/report", headers=engine_api.serve_a)
    assert r.status_code == 404 and "fedpers audit" in r.json()["detail"]
    (engine_api.run_dir / "report.html").write_text("<html>audit</html>")
    r = c.get("/v1/model/report", headers=engine_api.serve_a)
    assert r.status_code == 200 and "audit" in r.text
    assert r.headers["content-type"].startswith("text/html")


def test_items_pages_and_categories(engine_api: Any) -> None:
    c = engine_api.client
    r = c.get("/v1/items", params={"limit": 5, "offset": 2}, headers=engine_api.serve_a)
    body = r.json()
    assert body["total"] == 40 and [i["item"] for i in body["items"]] == [
        "i2", "i3", "i4", "i5", "i6",
    ]  # fmt: skip
    assert body["items"][0] == {"item": "i2", "title": "Title i2", "categories": ["Comedy"]}
    assert body["categories"] == ["Comedy", "Drama"]
    drama = c.get(
        "/v1/items", params={"category": "Drama", "limit": 100}, headers=engine_api.serve_a
    )
    assert drama.json()["total"] == 10
    assert all(i["categories"] == ["Drama"] for i in drama.json()["items"])
    for params in ({"limit": 0}, {"limit": 5000}, {"offset": -1}, {"category": "Horror"}):
        r = c.get("/v1/items", params=params, headers=engine_api.serve_a)
        assert r.status_code == 422, (params, r.text)
