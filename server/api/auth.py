"""API keys per tenant (stored hashed, shown once), scopes, and per-key rate limits.

A key reads ``fpk_<key_id>_<secret>``: ``key_id`` (12 hex digits) is public and names
the key in ``fedpers serve keys list``; ``secret`` is 32 random bytes (URL-safe base64).
The database keeps only the SHA-256 of the whole key: a random 256-bit secret needs no
slow hash, and a leaked database lets nobody call the API. Comparison is constant-time.

Scopes: ``serve`` (the user-facing routes) and ``admin`` (tenant administration,
experiments); ``admin`` includes ``serve``. Every key belongs to exactly one tenant and
every query the API makes filters on that tenant.

Rate limits are a token bucket per key (:func:`take_token` is the pure rule,
:class:`RateLimiter` the thin stateful wrapper). Buckets live in the memory of one
process: with ``--workers N`` each worker keeps its own, so a key may reach up to N
times its rate in total (documented in ``docs/api.md``).

Example:
    >>> import sqlite_utils
    >>> db = sqlite_utils.Database(memory=True)
    >>> migrations.apply(db)
    >>> key, secret = create_api_key(db, "shop-a", ["serve"])
    >>> authenticate(db, secret).tenant
    'shop-a'
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from fedpers.privacy.errors import DataError
from fedpers.server.api.errors import AuthenticationError, NotFoundError, RateLimitedError

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "ApiKey",
    "RateLimiter",
    "authenticate",
    "create_api_key",
    "hash_key",
    "list_api_keys",
    "migrations",
    "revoke_api_key",
    "take_token",
    "validate_tenant",
]

KEY_PREFIX = "fpk"
SCOPES = ("serve", "admin")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_KEY = re.compile(r"^fpk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
#: The columns :func:`_live_key` reads, in its order.
_KEY_COLUMNS = "key_id, tenant, name, scopes, rate_per_s, created_at, revoked_at"

migrations = Migrations("fedpers.api.auth")


@migrations()
def m001_api_keys(db: sqlite_utils.Database) -> None:
    """Keys: public id, tenant, scopes, SHA-256 of the key, created/revoked times."""
    db.execute(
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            name TEXT,
            scopes TEXT NOT NULL,
            key_sha256 TEXT NOT NULL,
            rate_per_s REAL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )"""
    )
    db.execute("CREATE INDEX api_keys_tenant ON api_keys(tenant)")


@dataclass(frozen=True)
class ApiKey:
    """One key as the API sees it (never the secret).

    Attributes:
        key_id: the public id.
        tenant: the tenant the key belongs to; every query filters on it.
        scopes: ``serve`` and/or ``admin``.
        name: a label for people.
        created_at: epoch seconds.
        revoked_at: epoch seconds, or ``None`` while the key works.
        rate_per_s: this key's own rate limit, or ``None`` for the service's default.
    """

    key_id: str
    tenant: str
    scopes: frozenset[str]
    name: str | None = None
    created_at: float = 0.0
    revoked_at: float | None = None
    rate_per_s: float | None = None

    def has_scope(self, scope: str) -> bool:
        """Whether the key may call a route of ``scope`` (``admin`` includes ``serve``)."""
        return scope in self.scopes or "admin" in self.scopes

    def public(self) -> dict[str, Any]:
        """The key's fields as JSON (no secret, no hash)."""
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "scopes": sorted(self.scopes),
            "name": self.name,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "rate_per_s": self.rate_per_s,
        }


def validate_tenant(tenant: str) -> str:
    """Check a tenant name (lower-case letters, digits, ``_.-``, at most 64).

    Raises:
        DataError: the name is not valid.
    """
    if not _TENANT.match(tenant):
        raise DataError(
            f"tenant {tenant!r}: use 1-64 lower-case letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return tenant


def hash_key(key: str) -> str:
    """Hex SHA-256 of a full key (what the database stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _row_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        tenant=row["tenant"],
        scopes=frozenset(json.loads(row["scopes"])),
        name=row["name"],
        created_at=float(row["created_at"]),
        revoked_at=None if row["revoked_at"] is None else float(row["revoked_at"]),
        rate_per_s=None if row["rate_per_s"] is None else float(row["rate_per_s"]),
    )


def create_api_key(
    db: sqlite_utils.Database,
    tenant: str,
    scopes: Iterable[str],
    *,
    name: str | None = None,
    rate_per_s: float | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is shown once and never stored.

    Args:
        db: the API database (migrated).
        tenant: the tenant the key belongs to.
        scopes: ``serve`` and/or ``admin``.
        name: a label.
        rate_per_s: a per-key rate limit instead of the service's default.

    Returns:
        The key and its full secret text (``fpk_<key_id>_<secret>``).

    Raises:
        DataError: an unknown scope, no scope, a bad tenant or a negative rate.
    """
    validate_tenant(tenant)
    wanted = frozenset(scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown or not wanted:
        raise DataError(f"scopes {sorted(wanted)}: choose from {', '.join(SCOPES)} (at least one)")
    if rate_per_s is not None and not (math.isfinite(rate_per_s) and rate_per_s >= 0):
        raise DataError(f"rate_per_s {rate_per_s}: must be a number >= 0")
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(key_id, tenant, wanted, name, time.time(), None, rate_per_s)
    with db.conn:
        db.execute(
            "INSERT INTO api_keys (key_id, tenant, name, scopes, key_sha256, rate_per_s,"
            " created_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            [
                key_id,
                tenant,
                name,
                json.dumps(sorted(wanted)),
                hash_key(secret),
                rate_per_s,
                key.created_at,
            ],
        )
    return key, secret


def list_api_keys(db: sqlite_utils.Database, tenant: str | None = None) -> list[ApiKey]:
    """Every key (of ``tenant`` when given), oldest first."""
    where, args = ("WHERE tenant = ?", [tenant]) if tenant is not None else ("", [])
    cursor = db.execute(
        "SELECT key_id, tenant, name, scopes, rate_per_s, created_at, revoked_at "
        f"FROM api_keys {where} ORDER BY created_at, key_id",
        args,
    )
    cols = [c[0] for c in cursor.description]
    return [_row_key(dict(zip(cols, row, strict=True))) for row in cursor.fetchall()]


def revoke_api_key(db: sqlite_utils.Database, key_id: str, tenant: str | None = None) -> ApiKey:
    """Revoke a key (it stays listed, with ``revoked_at``); revoking twice is a no-op.

    Args:
        db: the API database.
        key_id: the public id.
        tenant: when given, only a key of this tenant can be revoked.

    Raises:
        NotFoundError: no such key (for this tenant).
    """
    where = "key_id = ?" + (" AND tenant = ?" if tenant is not None else "")
    args = [key_id] + ([tenant] if tenant is not None else [])
    with db.conn:
        db.execute(
            f"UPDATE api_keys SET revoked_at = ? WHERE {where} AND revoked_at IS NULL",
            [time.time(), *args],
        )
    found = [k for k in list_api_keys(db, tenant) if k.key_id == key_id]
    if not found:
        raise NotFoundError(f"no API key {key_id!r}")
    return found[0]


def authenticate(db: sqlite_utils.Database, presented: str | None) -> ApiKey:
    """The live key that ``presented`` is.

    Raises:
        AuthenticationError: no key, a malformed one, an unknown one or a revoked one
            (the message never says which of the last two, nor echoes the key).
    """
    if not presented:
        raise AuthenticationError(
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    presented = presented.strip()
    match = _KEY.match(presented)
    if match is None:
        raise AuthenticationError(
            "malformed API key (expected fpk_<id>_<secret>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = db.execute(
        f"SELECT {_KEY_COLUMNS}, key_sha256 FROM api_keys WHERE key_id = ?", [match.group(1)]
    ).fetchone()
    if row is None or row[6] is not None or not hmac.compare_digest(row[7], hash_key(presented)):
        raise AuthenticationError(
            "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return _live_key(tuple(row[:7]))


@functools.lru_cache(maxsize=256)
def _live_key(row: tuple[Any, ...]) -> ApiKey:
    """The :class:`ApiKey` of one ``api_keys`` row (``_KEY_COLUMNS``); cached per row.

    The row is read on every request (a revocation counts at once); only turning an
    unchanged row into an object is cached.
    """
    return _row_key(dict(zip(_KEY_COLUMNS.split(", "), row, strict=True)))


def take_token(
    tokens: float, last: float, now: float, rate: float, burst: float
) -> tuple[bool, float, float]:
    """One request against a token bucket (pure).

    Args:
        tokens: tokens in the bucket at ``last``.
        last: when ``tokens`` was measured (seconds).
        now: the request's time.
        rate: tokens added per second (``> 0``).
        burst: the bucket's capacity.

    Returns:
        ``(allowed, tokens_left, retry_after_s)``; ``retry_after_s`` is 0 when allowed,
        else the seconds until one token is back.
    """
    tokens = min(burst, tokens + max(0.0, now - last) * rate)
    if tokens >= 1.0:
        return True, tokens - 1.0, 0.0
    return False, tokens, (1.0 - tokens) / rate


class RateLimiter:
    """Token buckets per key id in this process (thread-safe)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        """Default ``rate_per_s`` (``0``: unlimited) and bucket size ``burst``."""
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: ApiKey, now: float | None = None) -> None:
        """Spend one token of ``key``'s bucket.

        Raises:
            RateLimitedError: the bucket is empty (``Retry-After`` in whole seconds).
        """
        rate = self.rate_per_s if key.rate_per_s is None else key.rate_per_s
        if rate <= 0:
            return
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key.key_id, (self.burst, t))
            allowed, left, wait = take_token(tokens, last, t, rate, self.burst)
            self._buckets[key.key_id] = (left, t)
        if not allowed:
            raise RateLimitedError(
                f"rate limit of {rate:g} requests/s (burst {self.burst:g}) exceeded for key "
                f"{key.key_id}; retry after {math.ceil(wait)} s",
                retry_after_s=max(1, math.ceil(wait)),
            )
