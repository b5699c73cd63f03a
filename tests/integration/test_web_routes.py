"""The web page's routes in-process: which files are served, how, and the demo config."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fedpers.privacy.consent import Purpose
from fedpers.server.api.deps import get_settings
from fedpers.server.api.routes import web
from fedpers.server.api.settings import ApiSettings


def _client(tmp_path: Path, **settings: object) -> TestClient:
    app = FastAPI()
    app.include_router(web.router)
    configured = ApiSettings(run_dir=tmp_path, **settings)  # type: ignore[arg-type]

    async def override() -> ApiSettings:
        return configured

    app.dependency_overrides[get_settings] = override
    return TestClient(app)


@pytest.mark.parametrize(
    ("path", "media", "marker"),
    [
        ("/", "text/html", b"Recommended for you"),
        ("/privacy", "text/html", b"Privacy center"),
        ("/static/app.css", "text/css", b":focus-visible"),
        ("/static/storefront.js", "text/javascript", b"personal_state"),
        ("/static/privacy.js", "text/javascript", b"consent"),
        ("/static/api.js", "text/javascript", b"Authorization"),
    ],
)
def test_pages_are_served_from_the_package_with_a_strict_policy(
    tmp_path: Path, path: str, media: str, marker: bytes
) -> None:
    response = _client(tmp_path).get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert marker in response.content
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_every_file_the_pages_reference_is_served(tmp_path: Path) -> None:
    client = _client(tmp_path)
    names = web.web_files()
    referenced: set[str] = set()
    for file in names.values():
        text = file.body.decode()
        referenced |= {n for n in names if f"/static/{n}" in text or f'"./{n}"' in text}
    assert {"app.css", "api.js", "storefront.js", "privacy.js"} <= referenced
    for name in referenced:
        assert client.get(f"/static/{name}").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/../routes/web.py",
        "/static/..%2Froutes%2Fweb.py",
        "/static/%2e%2e/__init__.py",
        "/static/web.py",
        "/static/.hidden.js",
        "/static/missing.js",
        "/static/",
    ],
)
def test_nothing_outside_the_page_files_is_reachable(tmp_path: Path, path: str) -> None:
    response = _client(tmp_path).get(path)
    assert response.status_code == 404
    assert b"import" not in response.content


def test_demo_config_publishes_the_key_only_with_demo(tmp_path: Path) -> None:
    off = _client(tmp_path).get("/demo/config.json").json()
    assert off["demo"] is False and off["api_key"] is None and off["tenant"] is None
    assert "--demo" in off["enable_hint"]
    on_client = _client(tmp_path, demo_tenant="demo", demo_api_key=SecretStr("fp_demo_key"))
    response = on_client.get("/demo/config.json")
    assert response.headers["cache-control"] == "no-store"
    on = response.json()
    assert on["demo"] is True and on["api_key"] == "fp_demo_key" and on["tenant"] == "demo"
    assert on["personalisation_purposes"] == [1, 5, 6]
    assert [p["label"] for p in on["purposes"]] == ["P1", "P5", "P6", "P10", "P11"]
    for entry in on["purposes"]:
        assert entry["name"] == Purpose(entry["id"]).description
        assert entry["explanation"] == Purpose(entry["id"]).explanation


def test_a_tenant_without_a_key_is_no_demo(tmp_path: Path) -> None:
    config = _client(tmp_path, demo_tenant="demo").get("/demo/config.json").json()
    assert config["demo"] is False and config["api_key"] is None
