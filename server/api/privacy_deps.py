"""Dependencies of the consent and privacy-rights routes: the ledger key, the user path.

- :data:`LedgerKeyDep`: the consent ledger's HMAC key, read once by ``create_app``
  through :meth:`~fedpers.server.api.settings.ApiSettings.ledger_key` (fails closed: a
  missing or unsafe key file stops the service from starting, never a default key).
- :data:`UserIdPath`: the ``{user_id}`` path parameter, 1 to
  :data:`~fedpers.server.api.consent_store.USER_ID_MAX` characters.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam

from fedpers.server.api.consent_store import USER_ID_MAX

__all__ = ["LedgerKeyDep", "UserIdPath", "ledger_key"]


async def ledger_key(request: Request) -> bytes:
    """The consent ledger's HMAC key of this service (read and checked at start-up)."""
    key: bytes = request.app.state.ledger_key
    return key


LedgerKeyDep = Annotated[bytes, Depends(ledger_key)]
UserIdPath = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=USER_ID_MAX,
        description="the tenant's reference of the user (never an e-mail address)",
    ),
]
