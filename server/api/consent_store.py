"""Per (tenant, user) consent on the server: grant, withdraw, objection, erasure.

A thin stateful wrapper over the pure consent values of :mod:`fedpers.privacy.consent`
(purpose parsing, :class:`~fedpers.privacy.consent.ConsentState` transitions) and the
hash-chained :mod:`fedpers.server.api.ledger`. Every change writes the new state and its
ledger entry in one ``BEGIN IMMEDIATE`` transaction (:func:`write_transaction`), so the
state and the ledger never disagree and nothing is half-written.

Erasure (GDPR Art. 17, :func:`erase_user`) deletes every row about the user, shreds the
user's ledger content and *tombstones* the id: the tombstone keeps only a SHA-256
of the id (:func:`~fedpers.server.tombstones.tombstone_of`, the function the federation
reads them with), so the id can be
recognised again (later writes answer 410 Gone, the federation skips the device) without
being stored. The tables are in :mod:`fedpers.server.api.consent_schema`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from fedpers.server.api.db import open_api_db
    >>> folder = tempfile.TemporaryDirectory()
    >>> db, key = open_api_db(Path(folder.name) / "api.db"), b"ledger-hmac-key"
    >>> _ = change_consent(db, key, "shop-a", "u-1", "grant", [1, 5, 6], policy_version="v3")
    >>> sorted(int(p) for p in load_user_consent(db, "shop-a", "u-1").granted)
    [1, 5, 6]
    >>> erase_user(db, key, "shop-a", "u-1")["erased"]
    True
    >>> load_user_consent(db, "shop-a", "u-1").erased
    True
    >>> db.conn.close(); folder.cleanup()
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from fedpers.privacy.consent import ConsentState, Purpose, parse_purposes
from fedpers.privacy.errors import DataError
from fedpers.server.api.db import write_transaction
from fedpers.server.api.errors import GoneError
from fedpers.server.api.ledger import (
    append_entry,
    entries_for_subject,
    shred_subject,
)
from fedpers.server.tombstones import tombstone_of

__all__ = [
    "USER_ID_MAX",
    "ConsentAction",
    "UserConsent",
    "change_consent",
    "consent_history",
    "erase_user",
    "export_user",
    "is_tombstoned",
    "load_user_consent",
    "set_objection",
    "tombstone_of",
    "validate_user_id",
]

USER_ID_MAX = 128
"""The longest user reference the API accepts."""


@dataclass(frozen=True)
class UserConsent:
    """A user's consent as one tenant holds it (what the recommender decides on).

    Attributes:
        user_id: the tenant's user reference.
        known: the tenant has a consent record for this user.
        erased: the id is tombstoned (Art. 17).
        granted: the purposes granted now.
        objection: an Art. 21 objection to profiling is in force.
        policy_version: the policy version of the last decision.
        source: where the last decision came from (``web``, ``app``, ...).
        updated_at: epoch seconds of the last decision.
    """

    user_id: str
    known: bool
    erased: bool
    granted: frozenset[Purpose]
    objection: bool
    policy_version: str | None
    updated_at: float | None
    source: str | None = None

    def view(self, gpc: bool) -> dict[str, Any]:
        """The JSON the consent routes answer (``gpc``: this request's signal)."""
        return {
            "user_id": self.user_id,
            "granted": sorted(int(p) for p in self.granted),
            "objection": self.objection,
            "policy_version": self.policy_version,
            "source": self.source,
            "updated_at": self.updated_at,
            "gpc": gpc,
            "erased": self.erased,
        }


def validate_user_id(user_id: str) -> str:
    """Check a user reference (1 to 128 printable characters).

    Raises:
        DataError: empty, too long, or with control characters.
    """
    if not user_id or len(user_id) > USER_ID_MAX or not user_id.isprintable():
        raise DataError(f"user_id: 1 to {USER_ID_MAX} printable characters")
    return user_id


def is_tombstoned(db: sqlite_utils.Database, tenant: str, user_id: str) -> bool:
    """Whether ``tenant`` erased ``user_id``."""
    row = db.execute(
        "SELECT 1 FROM tombstones WHERE tenant = ? AND tombstone = ?",
        [tenant, tombstone_of(user_id)],
    ).fetchone()
    return row is not None


def load_user_consent(db: sqlite_utils.Database, tenant: str, user_id: str) -> UserConsent:
    """The consent ``tenant`` holds for ``user_id`` (unknown users: nothing granted).

    One statement reads the tombstone and the consent row, so both come from the same
    committed state (an erasure commits both changes at once).
    """
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM tombstones WHERE tenant = ?1 AND tombstone = ?3), "
        "c.granted, c.objection, c.policy_version, c.source, c.updated_at "
        "FROM (SELECT 1) LEFT JOIN consent_state AS c ON c.tenant = ?1 AND c.user_id = ?2",
        [tenant, user_id, tombstone_of(user_id)],
    ).fetchone()
    if row[0]:
        return UserConsent(user_id, True, True, frozenset(), False, None, None)
    if row[1] is None:
        return UserConsent(user_id, False, False, frozenset(), False, None, None)
    return UserConsent(
        user_id,
        True,
        False,
        _stored_purposes(row[1]),
        bool(row[2]),
        row[3],
        float(row[5]),
        source=row[4],
    )


@functools.lru_cache(maxsize=64)
def _stored_purposes(granted_json: str) -> frozenset[Purpose]:
    """The purposes of a stored ``granted`` column (a JSON list; few distinct values)."""
    return parse_purposes(json.loads(granted_json))


@contextlib.contextmanager
def _snapshot(db: sqlite_utils.Database) -> Iterator[None]:
    """A read transaction: every read inside sees the same committed state (WAL)."""
    conn = db.conn
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.rollback()


def _refuse_erased(db: sqlite_utils.Database, tenant: str, user_id: str) -> None:
    if is_tombstoned(db, tenant, user_id):
        raise GoneError(
            f"user {user_id!r} was erased (GDPR Art. 17); the id is tombstoned and "
            "accepts no new consent or data"
        )


def _store(
    db: sqlite_utils.Database,
    tenant: str,
    user_id: str,
    state: ConsentState,
    objection: bool,
    policy_version: str | None,
    source: str | None,
) -> None:
    db.execute(
        "INSERT INTO consent_state (tenant, user_id, granted, objection, policy_version, "
        "source, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, user_id) DO "
        "UPDATE SET granted = excluded.granted, objection = excluded.objection, "
        "policy_version = excluded.policy_version, source = excluded.source, "
        "updated_at = excluded.updated_at",
        [
            tenant,
            user_id,
            json.dumps(sorted(int(p) for p in state.granted)),
            int(objection),
            policy_version,
            source,
            state.updated_at,
        ],
    )


def _decide(
    db: sqlite_utils.Database,
    key: bytes,
    tenant: str,
    user_id: str,
    action: str,
    purposes: Iterable[Purpose | int | str],
    objection: bool | None,
    policy_version: str | None,
    source: str | None,
) -> UserConsent:
    validate_user_id(user_id)
    named = parse_purposes(list(purposes))
    with write_transaction(db):
        _refuse_erased(db, tenant, user_id)
        now = time.time()
        old = load_user_consent(db, tenant, user_id)
        state = ConsentState(old.granted, False, old.updated_at or 0.0)
        if action == "grant":
            state = state.granting(named, now)
        elif action == "withdraw":
            state = state.withdrawing(named, now)
        else:
            state = ConsentState(state.granted, False, now)
        objects = old.objection if objection is None else objection
        version = policy_version if policy_version is not None else old.policy_version
        _store(db, tenant, user_id, state, objects, version, source)
        details = {
            "purposes": sorted(int(p) for p in named),
            "policy_version": version,
            "source": source,
        }
        append_entry(db, key, tenant, action, user_id, details, at=now)
    return load_user_consent(db, tenant, user_id)


ConsentAction = Literal["grant", "withdraw"]
"""The two changes of a user's purposes."""


def change_consent(
    db: sqlite_utils.Database,
    key: bytes,
    tenant: str,
    user_id: str,
    action: ConsentAction,
    purposes: Iterable[Purpose | int | str],
    *,
    policy_version: str | None = None,
    source: str | None = None,
) -> UserConsent:
    """Grant or withdraw ``purposes`` and record it in the ledger, in one transaction.

    A withdrawal is as easy as a grant and effective for the next request.

    See the module's example.

    Raises:
        DataError: an unknown action or purpose, or a bad user id.
        GoneError: the user was erased.
    """
    if action not in ("grant", "withdraw"):
        raise DataError(f"consent action {action!r}: use 'grant' or 'withdraw'")
    return _decide(db, key, tenant, user_id, action, purposes, None, policy_version, source)


def set_objection(
    db: sqlite_utils.Database,
    key: bytes,
    tenant: str,
    user_id: str,
    objects: bool,
    *,
    source: str | None = None,
) -> UserConsent:
    """Record an Art. 21 objection to profiling (``objects``), or lift it; ledgered.

    No answer is personalised while an objection stands, whatever was granted.

    Raises:
        GoneError: the user was erased.
    """
    action = "object" if objects else "lift_objection"
    return _decide(db, key, tenant, user_id, action, (), objects, None, source)


def consent_history(
    db: sqlite_utils.Database, key: bytes, tenant: str, user_id: str
) -> list[dict[str, Any]]:
    """The user's consent decisions in this tenant, oldest first (empty once erased)."""
    out = []
    for entry in entries_for_subject(db, key, tenant, user_id):
        content = entry.content or {}
        out.append(
            {
                "seq": entry.seq,
                "at": entry.at,
                "action": entry.action,
                "purposes": list(content.get("purposes", [])),
                "policy_version": content.get("policy_version"),
                "source": content.get("source"),
            }
        )
    return out


def export_user(db: sqlite_utils.Database, key: bytes, tenant: str, user_id: str) -> dict[str, Any]:
    """Everything the server holds about the user in this tenant (Art. 20).

    The API keeps no events, vectors or per-user feedback (feedback is aggregated per
    item and variant), so this is the consent state and its ledger history.

    Raises:
        GoneError: the user was erased (nothing is held any more).
    """
    with _snapshot(db):  # the state and the history of one moment
        _refuse_erased(db, tenant, user_id)
        consent = load_user_consent(db, tenant, user_id)
        history = consent_history(db, key, tenant, user_id)
    return {
        "user_id": user_id,
        "tenant": tenant,
        "exported_at": time.time(),
        "consent": consent.view(False) if consent.known else None,
        "consent_history": history,
        "stored_elsewhere": [],
    }


def erase_user(db: sqlite_utils.Database, key: bytes, tenant: str, user_id: str) -> dict[str, Any]:
    """Erase the user in ``tenant`` (Art. 17) in one transaction.

    Deletes the consent row, appends an ``erase`` entry, shreds every ledger entry of
    the user (the chain keeps verifying) and tombstones the id. Erasing twice is
    idempotent (``already_erased``).

    Returns:
        What was removed: ``{"user_id", "erased": true, "already_erased",
        "consent_rows", "ledger_entries_shredded"}``.
    """
    validate_user_id(user_id)
    with write_transaction(db):
        if is_tombstoned(db, tenant, user_id):
            return {"user_id": user_id, "erased": True, "already_erased": True,
                    "consent_rows": 0, "ledger_entries_shredded": 0}  # fmt: skip
        rows = db.execute(
            "DELETE FROM consent_state WHERE tenant = ? AND user_id = ?", [tenant, user_id]
        ).rowcount
        append_entry(db, key, tenant, "erase", user_id, {})
        shredded = shred_subject(db, key, tenant, user_id)
        db.execute(
            "INSERT INTO tombstones (tenant, tombstone, erased_at) VALUES (?, ?, ?)",
            [tenant, tombstone_of(user_id), time.time()],
        )
    return {
        "user_id": user_id,
        "erased": True,
        "already_erased": False,
        "consent_rows": int(rows),
        "ledger_entries_shredded": shredded,
    }
