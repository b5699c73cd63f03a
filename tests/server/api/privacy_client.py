"""A TestClient on ``create_app`` with keys of two tenants, for the consent/privacy tests.

Not a test module: the consent, privacy and consent-gate tests build their fixture with
:func:`open_client` over the ``tiny_run`` directory of ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fedpers.server.api.auth import create_api_key
from fedpers.server.api.db import open_api_db
from fedpers.server.api.main import create_app
from fedpers.server.api.settings import ApiSettings, create_ledger_key


@dataclass
class PrivacyApi:
    """The client, the database path, the ledger key and Authorization headers."""

    client: TestClient
    db_path: Path
    ledger_key: bytes
    a: dict[str, str]
    b: dict[str, str]

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """POST ``body`` as tenant A (or with ``headers``)."""
        return self.client.post(path, json=body, headers=headers or self.a)

    def grant(self, user: str, purposes: list[int], headers: dict[str, str] | None = None) -> Any:
        """Grant ``purposes`` to ``user`` through the route; fails the test on an error."""
        r = self.post(
            f"/v1/users/{user}/consent/grant",
            {"purposes": purposes, "policy_version": "v1", "source": "test"},
            headers,
        )
        assert r.status_code == 200, r.text
        return r.json()


@contextmanager
def open_client(run_dir: Path) -> Iterator[PrivacyApi]:
    """Serve ``run_dir`` (ledger key created, no rate limit, no reload thread)."""
    settings = ApiSettings(run_dir=run_dir, reload_interval_s=0.0, rate_limit_per_s=0.0)
    create_ledger_key(settings.ledger_key_file)
    db = open_api_db(settings.database_path)
    headers = {}
    for tenant in ("shop-a", "shop-b"):
        _, secret = create_api_key(db, tenant, ["serve"])
        headers[tenant] = {"Authorization": f"Bearer {secret}"}
    db.conn.close()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield PrivacyApi(
            client,
            settings.database_path,
            settings.ledger_key(),
            headers["shop-a"],
            headers["shop-b"],
        )
