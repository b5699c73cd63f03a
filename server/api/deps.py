"""The ``Annotated`` dependencies every route uses (``docs/dev/api-contract.md``).

Routes declare what they need and hold no plumbing::

    @router.get("/v1/things")
    def things(key: ServeKey, db: DbDep, gpc: GpcDep) -> ...: ...

- :data:`SettingsDep`: the app's :class:`~fedpers.server.api.settings.ApiSettings`
  (``app.state.settings``; tests replace it with ``app.dependency_overrides``).
- :data:`DbDep`: a connection of this process's pool, lent to this request only.
- :data:`ServeKey` / :data:`AdminKey`: the request's API key (``Authorization: Bearer``
  or ``X-API-Key``) with that scope, after its rate limit; ``key.tenant`` is the tenant
  every query must filter on.
- :data:`GpcDep`: whether the request carries ``Sec-GPC: 1`` (counted as a consent
  decision ``gpc``).
- :data:`ModelDep`: the engine's :class:`~fedpers.server.api.model_state.ModelHolder`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request

from fedpers.privacy.consent import GPC_HEADER, parse_gpc_header
from fedpers.server.api.auth import ApiKey, RateLimiter, authenticate
from fedpers.server.api.db import ConnectionPool
from fedpers.server.api.errors import PermissionDeniedError
from fedpers.server.api.model_state import ModelHolder
from fedpers.server.api.observability import record_consent_decision
from fedpers.server.api.settings import ApiSettings

__all__ = [
    "AdminKey",
    "DbDep",
    "GpcDep",
    "ModelDep",
    "ServeKey",
    "SettingsDep",
    "authorize",
    "get_db",
    "get_model_holder",
    "get_pool",
    "get_settings",
    "gpc_signal",
    "presented_key",
    "read_gpc",
    "require_scope",
]


async def get_settings(request: Request) -> ApiSettings:
    """The settings the app was created with."""
    settings: ApiSettings = request.app.state.settings
    return settings


def get_pool(request: Request) -> ConnectionPool:
    """This process's connection pool (``app.state.db_pool``)."""
    pool: ConnectionPool = request.app.state.db_pool
    return pool


async def get_db(request: Request) -> AsyncIterator[sqlite_utils.Database]:
    """Lend one pooled connection for the request; an open transaction is rolled back."""
    pool = get_pool(request)
    db = pool.acquire()
    try:
        yield db
    finally:
        pool.release(db)


async def get_model_holder(request: Request) -> ModelHolder:
    """The engine's model holder (``app.state.model_holder``)."""
    holder: ModelHolder = request.app.state.model_holder
    return holder


def presented_key(request: Request) -> str | None:
    """The key the request carries: ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key")


def authorize(request: Request, scope: str) -> ApiKey:
    """Authenticate the request's key, check ``scope`` and spend one rate-limit token.

    The key's tenant and id go to the request state (the access log reads them).

    Raises:
        AuthenticationError: no, a malformed, an unknown or a revoked key (401).
        PermissionDeniedError: the key lacks ``scope`` (403).
        RateLimitedError: the key's budget is spent (429).
    """
    with get_pool(request).connection() as db:
        key = authenticate(db, presented_key(request))
    state = request.scope.setdefault("state", {})
    state["tenant"] = key.tenant
    state["key_id"] = key.key_id
    if not key.has_scope(scope):
        raise PermissionDeniedError(
            f"API key {key.key_id} lacks the {scope!r} scope this route needs"
        )
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.check(key)
    return key


def require_scope(scope: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that :func:`authorize` s the request's key for ``scope``.

    Args:
        scope: ``serve`` or ``admin``.
    """

    async def dependency(request: Request) -> ApiKey:
        return authorize(request, scope)

    dependency.__name__ = f"require_{scope}_scope"
    return dependency


def read_gpc(request: Request) -> bool:
    """Whether this request carries ``Sec-GPC: 1`` (counted as a consent decision)."""
    gpc = parse_gpc_header(request.headers.get(GPC_HEADER))
    if gpc:
        record_consent_decision("gpc")
    return gpc


async def gpc_signal(request: Request) -> bool:
    """:func:`read_gpc` as a dependency."""
    return read_gpc(request)


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
DbDep = Annotated[sqlite_utils.Database, Depends(get_db)]
ServeKey = Annotated[ApiKey, Depends(require_scope("serve"))]
AdminKey = Annotated[ApiKey, Depends(require_scope("admin"))]
GpcDep = Annotated[bool, Depends(gpc_signal)]
ModelDep = Annotated[ModelHolder, Depends(get_model_holder)]
