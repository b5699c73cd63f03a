"""Privacy rights of a user: export (GDPR Art. 20) and erasure (Art. 17), serve scope.

``GET /v1/users/{user_id}/export`` answers everything the server holds about the user in
the key's tenant. ``DELETE /v1/users/{user_id}`` removes every row about the user in one
transaction, shreds the user's ledger content (the chain still verifies) and tombstones
the id: later consent writes answer 410 Gone, recommendations for it are never
personalised, and the federation of the run excludes the device from later rounds.
"""

from __future__ import annotations

from fastapi import APIRouter

from fedpers.server.api import consent_store
from fedpers.server.api.deps import DbDep, GpcDep, ServeKey
from fedpers.server.api.observability import record_consent_decision
from fedpers.server.api.privacy_deps import LedgerKeyDep, UserIdPath
from fedpers.server.api.privacy_schemas import ErasureReceipt, UserExport

__all__ = ["router"]

router = APIRouter(prefix="/v1/users", tags=["privacy"])


@router.get(
    "/{user_id}/export",
    response_model=UserExport,
    responses={410: {"description": "the user was erased: nothing is held any more"}},
)
def export_user(
    user_id: UserIdPath, key: ServeKey, db: DbDep, gpc: GpcDep, ledger_key: LedgerKeyDep
) -> UserExport:
    """Everything the server holds about the user in this tenant (Art. 20), as JSON."""
    export = consent_store.export_user(db, ledger_key, key.tenant, user_id)
    if export["consent"] is not None:
        export["consent"]["gpc"] = gpc
    return UserExport(**export)


@router.delete("/{user_id}", response_model=ErasureReceipt)
def erase_user(
    user_id: UserIdPath, key: ServeKey, db: DbDep, gpc: GpcDep, ledger_key: LedgerKeyDep
) -> ErasureReceipt:
    """Erase the user (Art. 17): rows removed, ledger shredded, id tombstoned; idempotent."""
    receipt = consent_store.erase_user(db, ledger_key, key.tenant, user_id)
    if not receipt["already_erased"]:
        record_consent_decision("erase")
    return ErasureReceipt(**receipt)
