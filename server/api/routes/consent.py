"""Consent per (tenant, user): read, grant, withdraw, objection, history (serve scope).

Every change is written with its ledger entry in one transaction by
:mod:`fedpers.server.api.consent_store` and counted in
``fedpers_api_consent_decisions_total`` (one per purpose; ``all`` for an objection).
``Sec-GPC: 1`` is read on every request (:data:`~fedpers.server.api.deps.GpcDep`,
counted as a ``gpc`` decision): the answer's ``gpc`` says it was seen, and
``POST /v1/recommendations`` refuses to personalise while it is set. A change for an
erased user answers 410 Gone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fedpers.privacy.consent import parse_purposes
from fedpers.server.api import consent_store
from fedpers.server.api.consent_store import ConsentAction
from fedpers.server.api.deps import DbDep, GpcDep, ServeKey
from fedpers.server.api.observability import record_consent_decision
from fedpers.server.api.privacy_deps import LedgerKeyDep, UserIdPath
from fedpers.server.api.privacy_schemas import (
    ConsentChange,
    ConsentHistory,
    ConsentView,
    HistoryEntry,
    ObjectionIn,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/users", tags=["consent"])

_GONE: dict[int | str, dict[str, Any]] = {
    410: {"description": "the user was erased (Art. 17): the id is tombstoned"}
}


def _view(consent: consent_store.UserConsent, gpc: bool) -> ConsentView:
    return ConsentView(**consent.view(gpc))


def _count(action: str, body: ConsentChange) -> None:
    for purpose in sorted(parse_purposes(body.purposes)):
        record_consent_decision(action, purpose.label)


@router.get("/{user_id}/consent", response_model=ConsentView)
def read_consent(user_id: UserIdPath, key: ServeKey, db: DbDep, gpc: GpcDep) -> ConsentView:
    """The consent this tenant holds for the user (nothing granted for an unknown user)."""
    return _view(consent_store.load_user_consent(db, key.tenant, user_id), gpc)


@router.post("/{user_id}/consent/{action}", response_model=ConsentView, responses=_GONE)
def change_consent(
    user_id: UserIdPath,
    action: ConsentAction,
    body: ConsentChange,
    key: ServeKey,
    db: DbDep,
    gpc: GpcDep,
    ledger_key: LedgerKeyDep,
) -> ConsentView:
    """Grant or withdraw purposes (TCF v2.2: 1, 5, 6, 10, 11) under a policy version.

    Recorded in the ledger; a withdrawal is as easy as a grant, and the next request
    already sees it.
    """
    consent = consent_store.change_consent(
        db,
        ledger_key,
        key.tenant,
        user_id,
        action,
        body.purposes,
        policy_version=body.policy_version,
        source=body.source,
    )
    _count(action, body)
    return _view(consent, gpc)


@router.post("/{user_id}/objection", response_model=ConsentView, responses=_GONE)
def object_to_profiling(
    user_id: UserIdPath,
    key: ServeKey,
    db: DbDep,
    gpc: GpcDep,
    ledger_key: LedgerKeyDep,
    body: ObjectionIn | None = None,
) -> ConsentView:
    """Object to profiling (GDPR Art. 21): no personalisation while it stands."""
    source = body.source if body is not None else None
    consent = consent_store.set_objection(db, ledger_key, key.tenant, user_id, True, source=source)
    record_consent_decision("object")
    return _view(consent, gpc)


@router.delete("/{user_id}/objection", response_model=ConsentView, responses=_GONE)
def lift_objection(
    user_id: UserIdPath, key: ServeKey, db: DbDep, gpc: GpcDep, ledger_key: LedgerKeyDep
) -> ConsentView:
    """Lift the user's objection to profiling (the granted purposes apply again)."""
    consent = consent_store.set_objection(db, ledger_key, key.tenant, user_id, False)
    record_consent_decision("lift_objection")
    return _view(consent, gpc)


@router.get("/{user_id}/consent/history", response_model=ConsentHistory)
def consent_history(
    user_id: UserIdPath, key: ServeKey, db: DbDep, gpc: GpcDep, ledger_key: LedgerKeyDep
) -> ConsentHistory:
    """The user's consent decisions in this tenant, oldest first (empty once erased)."""
    entries = consent_store.consent_history(db, ledger_key, key.tenant, user_id)
    return ConsentHistory(user_id=user_id, entries=[HistoryEntry(**e) for e in entries])
