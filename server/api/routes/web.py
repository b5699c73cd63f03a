"""The storefront demo and the privacy center: static pages shipped in the package.

The pages (``fedpers/server/api/web/``) are plain HTML, CSS and ES modules, with no build
step. They talk to the server only through the public API (``/v1/...``) with a serve-scope
key of the demo tenant, which ``GET /demo/config.json`` hands out when the server was
started with ``fedpers serve --demo``. Without ``--demo`` the config says so and the pages
explain how to enable the demo; they never hold a key of their own.

Routes (no key needed, none of them reads or writes user data):

* ``GET /``: the storefront; ``GET /privacy``: the privacy center;
* ``GET /static/{name}``: one of the page's files (a fixed list, read once from the package);
* ``GET /demo/config.json``: demo tenant and key, and the consent purposes in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse

from fedpers.privacy.consent import GPC_HEADER, Purpose
from fedpers.server.api.deps import SettingsDep

__all__ = [
    "DEMO_POLICY_VERSION",
    "PERSONALISATION_PURPOSES",
    "WebFile",
    "demo_config",
    "router",
    "web_files",
]

DEMO_POLICY_VERSION = "fedpers-demo-1"
"""The policy version the demo pages send with every consent decision."""

PERSONALISATION_PURPOSES: tuple[Purpose, ...] = (
    Purpose.STORE_ACCESS,
    Purpose.CREATE_PROFILES,
    Purpose.USE_PROFILES,
)
"""What the storefront's "personalise" button grants: the API personalises only with all three."""

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The pages load nothing from elsewhere and run no inline script: say so to the browser.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_ENABLE_HINT = "fedpers serve --run RUN_DIR --demo"

router = APIRouter(tags=["web"])


@dataclass(frozen=True)
class WebFile:
    """One file of the web page as served: its bytes and media type."""

    name: str
    body: bytes
    media_type: str


@lru_cache(maxsize=1)
def web_files() -> dict[str, WebFile]:
    """Every servable file of the package's ``web/`` folder, by name (read once).

    Only plain files directly in ``web/`` with a known suffix are served, so no request
    path can reach anything else in the package.
    """
    folder = resources.files("fedpers.server.api").joinpath("web")
    out: dict[str, WebFile] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _MEDIA_TYPES and not entry.name.startswith("."):
            out[entry.name] = WebFile(entry.name, entry.read_bytes(), _MEDIA_TYPES[suffix])
    return out


def _serve(name: str) -> Response:
    file = web_files().get(name)
    if file is None:
        raise HTTPException(status_code=404, detail=f"no web file named {name!r}")
    return Response(file.body, media_type=file.media_type, headers=_SECURITY_HEADERS)


def demo_config(
    demo: bool, tenant: str | None, api_key: str | None, *, policy_version: str
) -> dict[str, Any]:
    """What the pages need to start: whether the demo is on, its key, the purposes.

    Args:
        demo: whether the server runs with ``--demo`` and a demo key exists.
        tenant: the demo tenant.
        api_key: the demo tenant's serve-scope key (published only when ``demo``).
        policy_version: sent by the pages with every consent decision.
    """
    return {
        "demo": bool(demo and api_key),
        "tenant": tenant if demo else None,
        "api_key": api_key if demo else None,
        "policy_version": policy_version,
        "enable_hint": _ENABLE_HINT,
        "gpc_header": GPC_HEADER,
        "personalisation_purposes": [int(p) for p in PERSONALISATION_PURPOSES],
        "purposes": [
            {
                "id": int(p),
                "label": p.label,
                "name": p.description,
                "explanation": p.explanation,
            }
            for p in Purpose
        ],
    }


@router.get("/", include_in_schema=False)
def storefront() -> Response:
    """The storefront demo page."""
    return _serve("index.html")


@router.get("/privacy", include_in_schema=False)
def privacy_center() -> Response:
    """The privacy center page."""
    return _serve("privacy.html")


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> Response:
    """One file of the pages (HTML, CSS, JavaScript modules)."""
    return _serve(name)


@router.get("/demo/config.json", include_in_schema=False)
def demo_config_route(settings: SettingsDep) -> JSONResponse:
    """The demo tenant and its serve-scope key when the server runs with ``--demo``."""
    key = settings.demo_api_key
    secret = None if key is None else key.get_secret_value()
    demo = secret is not None and settings.demo_tenant is not None
    body = demo_config(demo, settings.demo_tenant, secret, policy_version=DEMO_POLICY_VERSION)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
