"""The ``fedpers serve`` app in a TestClient, with keys of two tenants, for the API tests.

Not a test module: ``conftest.py`` builds the ``engine_api`` (alias ``api``) fixture with
:func:`serve_app` over its ``tiny_run`` directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fedpers.server.api import consent_store
from fedpers.server.api.auth import create_api_key
from fedpers.server.api.db import open_api_db
from fedpers.server.api.main import create_app
from fedpers.server.api.settings import ApiSettings, create_ledger_key

KEYS = (
    ("serve_a", "shop-a", ["serve"]),
    ("serve_b", "shop-b", ["serve"]),
    ("admin_a", "shop-a", ["serve", "admin"]),
)
"""The keys every served app has: name, tenant, scopes."""


@dataclass
class EngineApi:
    """A TestClient on ``create_app``, its database, its ledger key and the keys' headers."""

    client: TestClient
    run_dir: Path
    db_path: Path
    serve_a: dict[str, str]
    serve_b: dict[str, str]
    admin_a: dict[str, str]
    ledger_key: bytes = b""

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """POST ``body`` as tenant A's serve key (or with ``headers``)."""
        return self.client.post(path, json=body, headers=headers or self.serve_a)

    def grant_through_route(
        self, user: str, purposes: list[int], headers: dict[str, str] | None = None
    ) -> Any:
        """Grant ``purposes`` to ``user`` through the route; fails the test on an error."""
        r = self.post(
            f"/v1/users/{user}/consent/grant",
            {"purposes": purposes, "policy_version": "v1", "source": "test"},
            headers,
        )
        assert r.status_code == 200, r.text
        return r.json()

    def consent(
        self, action: str, user: str, purposes: list[int] = (), tenant: str = "shop-a"
    ) -> None:
        """Change consent through the platform's consent store (as its routes do)."""
        db = open_api_db(self.db_path)
        try:
            k, t = self.ledger_key, tenant
            if action in ("grant", "withdraw"):
                consent_store.change_consent(
                    db, k, t, user, action, purposes, policy_version="v1", source="t"
                )
            elif action == "object":
                consent_store.set_objection(db, k, t, user, True, source="t")
            elif action == "erase":
                consent_store.erase_user(db, k, t, user)
            else:
                raise ValueError(action)
        finally:
            db.conn.close()

    def grant(self, user: str, purposes: list[int]) -> None:
        """Grant ``purposes`` to ``user`` through the consent store."""
        self.consent("grant", user, purposes)


@contextmanager
def serve_app(run_dir: Path) -> Iterator[EngineApi]:
    """Serve ``run_dir``: ledger key created, no rate limit, no reload thread.

    ``context_ttl_s=0``: every request reads the feedback counters (the cache has its own
    tests).
    """
    settings = ApiSettings(
        run_dir=run_dir, reload_interval_s=0.0, rate_limit_per_s=0.0, context_ttl_s=0.0
    )
    create_ledger_key(settings.ledger_key_file)
    db = open_api_db(settings.database_path)
    keys = {}
    for name, tenant, scopes in KEYS:
        _, secret = create_api_key(db, tenant, scopes)
        keys[name] = {"Authorization": f"Bearer {secret}"}
    db.conn.close()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield EngineApi(
            client, run_dir, settings.database_path, **keys, ledger_key=settings.ledger_key()
        )
