"""The consent ledger: append-only, hash-chained, HMAC-keyed, shreddable.

Every consent decision the API records (grant, withdraw, objection, lift, erasure) is
appended to ``consent_ledger``, one hash chain per tenant:

* ``content`` holds the personal part of an entry as canonical JSON (the user id,
  purposes, policy version, source and a random 128-bit ``nonce``);
* ``content_digest = HMAC(key, "content" | content)``: the nonce makes the digest
  impossible to brute-force from a guessed user id even for someone holding the key;
* ``entry_hash = HMAC(key, "entry" | tenant, seq, at, action, content_digest,
  prev_hash)``, where ``prev_hash`` is the entry hash of ``seq - 1`` (``GENESIS`` for
  the first entry). Without the key nobody can recompute a hash after changing a row;
* ``subject`` is a keyed pseudonym of the user id (:func:`subject_of`), the column
  queries use to find a user's entries; it is derived from ``content`` and checked
  against it;
* ``ledger_head`` keeps each chain's last ``seq`` and hash under its own HMAC, so that
  deleting the newest entries is detected too.

Erasure (GDPR Art. 17) *shreds* a user's entries (:func:`shred_subject`): ``content``
and ``subject`` become ``NULL`` while ``content_digest`` stays, so every entry hash
still verifies and the chain stays whole, but nothing in it names the user any more.

:func:`verify_ledger` recomputes every chain and says at which ``(tenant, seq)`` it
breaks. What it cannot detect: a rollback of the whole database file to an older copy
(anchor :func:`chain_heads` outside the database for that), and anything done by
someone who holds the key.

Writes here never open a transaction themselves: the caller wraps the ledger append and
the state change it records in one ``BEGIN IMMEDIATE`` transaction
(:func:`fedpers.server.api.db.write_transaction`), so a chain can not fork
when several workers append at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from fedpers.privacy.errors import DataError

__all__ = [
    "GENESIS",
    "LedgerBreak",
    "LedgerEntry",
    "LedgerReport",
    "append_entry",
    "chain_heads",
    "content_digest",
    "entries_for_subject",
    "entry_hash",
    "shred_subject",
    "subject_of",
    "verify_ledger",
]

GENESIS = "0" * 64
"""The ``prev_hash`` of a chain's first entry."""

# ---------------------------------------------------------------------- pure functions


def _mac(key: bytes, domain: str, payload: str) -> str:
    return hmac.new(key, f"{domain}\x00{payload}".encode(), hashlib.sha256).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def subject_of(key: bytes, user_id: str) -> str:
    """The keyed pseudonym of ``user_id`` (the same for every tenant).

    Ledger queries and tombstones use it instead of the raw id; without the key it
    cannot be linked back to a user id.
    """
    return _mac(key, "subject", user_id)


def content_digest(key: bytes, content: str) -> str:
    """HMAC of an entry's canonical content JSON (kept when the content is shredded)."""
    return _mac(key, "content", content)


def entry_hash(
    key: bytes, tenant: str, seq: int, at: float, action: str, digest: str, prev_hash: str
) -> str:
    """HMAC chaining one entry to the previous one (see the module docstring)."""
    return _mac(key, "entry", _canonical([tenant, seq, repr(float(at)), action, digest, prev_hash]))


def _head_signature(key: bytes, tenant: str, seq: int, head: str) -> str:
    return _mac(key, "head", _canonical([tenant, seq, head]))


# ---------------------------------------------------------------------- records


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger entry as read back (``content`` is ``None`` once shredded).

    Attributes:
        tenant: the chain.
        seq: position in the chain, from 1.
        at: epoch seconds of the decision.
        action: ``grant``, ``withdraw``, ``object``, ``lift_objection`` or ``erase``.
        content: the decoded personal content, ``None`` when shredded.
        entry_hash: the entry's chained HMAC.
    """

    tenant: str
    seq: int
    at: float
    action: str
    content: Mapping[str, Any] | None
    entry_hash: str


@dataclass(frozen=True)
class LedgerBreak:
    """Where and why a chain does not verify."""

    tenant: str
    seq: int
    problem: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"tenant": self.tenant, "seq": self.seq, "problem": self.problem}


@dataclass(frozen=True)
class LedgerReport:
    """What :func:`verify_ledger` found.

    Attributes:
        ok: every chain verifies.
        chains: entries checked per tenant.
        shredded: entries whose content was shredded (erasure), per tenant.
        breaks: the first break of each broken chain, in tenant order.
    """

    ok: bool
    chains: dict[str, int] = field(default_factory=dict)
    shredded: dict[str, int] = field(default_factory=dict)
    breaks: list[LedgerBreak] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``fedpers serve verify-ledger --json`` prints it)."""
        return {
            "ok": self.ok,
            "entries": sum(self.chains.values()),
            "chains": dict(self.chains),
            "shredded": dict(self.shredded),
            "breaks": [b.to_dict() for b in self.breaks],
        }


# ---------------------------------------------------------------------- writes


def append_entry(
    db: sqlite_utils.Database,
    key: bytes,
    tenant: str,
    action: str,
    user_id: str,
    details: Mapping[str, Any],
    *,
    at: float | None = None,
) -> LedgerEntry:
    """Append one entry to ``tenant``'s chain (inside the caller's write transaction).

    Args:
        db: the API database, inside a ``BEGIN IMMEDIATE`` transaction.
        key: the ledger's HMAC key.
        tenant: the chain.
        action: what was decided.
        user_id: whom it is about (goes into the shreddable content only).
        details: the rest of the personal content (purposes, policy version, source).
        at: epoch seconds (default now).

    Raises:
        DataError: ``details`` uses a reserved field (``user_id``, ``nonce``).
    """
    if {"user_id", "nonce"} & set(details):
        raise DataError("ledger details must not set user_id or nonce")
    when = time.time() if at is None else float(at)
    body = {**details, "user_id": user_id, "nonce": secrets.token_hex(16)}
    content = _canonical(body)
    digest = content_digest(key, content)
    row = db.execute(
        "SELECT seq, entry_hash FROM ledger_head WHERE tenant = ?", [tenant]
    ).fetchone()
    seq, prev = (int(row[0]) + 1, str(row[1])) if row else (1, GENESIS)
    new_hash = entry_hash(key, tenant, seq, when, action, digest, prev)
    db.execute(
        "INSERT INTO consent_ledger (tenant, seq, at, action, subject, content, "
        "content_digest, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [tenant, seq, when, action, subject_of(key, user_id), content, digest, prev, new_hash],
    )
    db.execute(
        "INSERT INTO ledger_head (tenant, seq, entry_hash, signature) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, "
        "entry_hash = excluded.entry_hash, signature = excluded.signature",
        [tenant, seq, new_hash, _head_signature(key, tenant, seq, new_hash)],
    )
    return LedgerEntry(tenant, seq, when, action, body, new_hash)


def shred_subject(db: sqlite_utils.Database, key: bytes, tenant: str, user_id: str) -> int:
    """Shred every ledger entry of ``user_id`` in ``tenant`` (content and subject NULL).

    Returns:
        How many entries were shredded.
    """
    cursor = db.execute(
        "UPDATE consent_ledger SET content = NULL, subject = NULL, shredded_at = ? "
        "WHERE tenant = ? AND subject = ?",
        [time.time(), tenant, subject_of(key, user_id)],
    )
    return int(cursor.rowcount)


# ---------------------------------------------------------------------- reads


def entries_for_subject(
    db: sqlite_utils.Database, key: bytes, tenant: str, user_id: str
) -> list[LedgerEntry]:
    """The unshredded entries of ``user_id`` in ``tenant``'s chain, oldest first."""
    rows = db.execute(
        "SELECT seq, at, action, content, entry_hash FROM consent_ledger "
        "WHERE tenant = ? AND subject = ? AND content IS NOT NULL ORDER BY seq",
        [tenant, subject_of(key, user_id)],
    ).fetchall()
    return [
        LedgerEntry(tenant, int(seq), float(at), str(action), json.loads(content), str(h))
        for seq, at, action, content, h in rows
    ]


def chain_heads(db: sqlite_utils.Database) -> dict[str, tuple[int, str]]:
    """Each tenant's last ``(seq, entry_hash)``: a value worth anchoring elsewhere."""
    rows = db.execute("SELECT tenant, seq, entry_hash FROM ledger_head ORDER BY tenant")
    return {str(t): (int(s), str(h)) for t, s, h in rows.fetchall()}


def _check_row(
    key: bytes, tenant: str, expected_seq: int, prev: str, row: Sequence[Any]
) -> str | None:
    seq, at, action, subject, content, digest, prev_hash, stored_hash, shredded_at = row
    if seq != expected_seq:
        return f"entry {expected_seq} is missing (next entry is {seq})"
    if prev_hash != prev:
        return "prev_hash does not match the previous entry's hash"
    if content is not None:
        if content_digest(key, content) != digest:
            return "content does not match its digest (content was changed)"
        try:
            user_id = json.loads(content)["user_id"]
        except (ValueError, KeyError, TypeError):
            return "content is not a ledger record"
        if subject != subject_of(key, str(user_id)):
            return "subject does not match the content's user"
    elif subject is not None or shredded_at is None:
        return "content is missing but the entry was not shredded by an erasure"
    if entry_hash(key, tenant, int(seq), float(at), str(action), str(digest), prev) != stored_hash:
        return "entry hash does not verify (seq, time, action or digest was changed)"
    return None


def _verify_chain(
    db: sqlite_utils.Database, key: bytes, tenant: str
) -> tuple[int, int, LedgerBreak | None]:
    rows = db.execute(
        "SELECT seq, at, action, subject, content, content_digest, prev_hash, entry_hash, "
        "shredded_at FROM consent_ledger WHERE tenant = ? ORDER BY seq",
        [tenant],
    )
    prev, expected, shredded = GENESIS, 1, 0
    for row in rows:
        problem = _check_row(key, tenant, expected, prev, row)
        if problem is not None:
            return expected - 1, shredded, LedgerBreak(tenant, expected, problem)
        shredded += row[4] is None
        prev, expected = str(row[7]), expected + 1
    head = db.execute(
        "SELECT seq, entry_hash, signature FROM ledger_head WHERE tenant = ?", [tenant]
    ).fetchone()
    last = expected - 1
    if head is None:
        return last, shredded, LedgerBreak(tenant, last + 1, "the chain's signed head is missing")
    head_seq, head_hash, signature = int(head[0]), str(head[1]), str(head[2])
    if not hmac.compare_digest(signature, _head_signature(key, tenant, head_seq, head_hash)):
        return (
            last,
            shredded,
            LedgerBreak(tenant, head_seq, "the chain's head signature is invalid"),
        )
    if head_seq != last or head_hash != prev:
        return (
            last,
            shredded,
            LedgerBreak(
                tenant,
                last + 1,
                f"the chain ends at entry {last} but its signed head is entry {head_seq} "
                "(newest entries were deleted)",
            ),
        )
    return last, shredded, None


def verify_ledger(db: sqlite_utils.Database, key: bytes) -> LedgerReport:
    """Recompute every chain of the ledger.

    Args:
        db: the API database.
        key: the ledger's HMAC key.

    Returns:
        A :class:`LedgerReport`; ``breaks`` holds the first ``(tenant, seq)`` of each
        chain that does not verify and what is wrong there.
    """
    tenants = [
        str(r[0])
        for r in db.execute(
            "SELECT tenant FROM consent_ledger UNION SELECT tenant FROM ledger_head ORDER BY 1"
        ).fetchall()
    ]
    report = LedgerReport(ok=True)
    for tenant in tenants:
        checked, shredded, broken = _verify_chain(db, key, tenant)
        report.chains[tenant] = checked
        report.shredded[tenant] = shredded
        if broken is not None:
            report.breaks.append(broken)
    return LedgerReport(not report.breaks, report.chains, report.shredded, report.breaks)
