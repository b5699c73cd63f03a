"""Dependencies of the consent and privacy-rights routes: the ledger key, the user path.

- :data:`LedgerKeyDep`: the consent ledger's HMAC key, read through
  :meth:`~fedpers.server.api.settings.ApiSettings.ledger_key` (fails closed: a missing
  or unsafe key file is an error, never a default key).
- :data:`UserIdPath`: the ``{user_id}`` path parameter, 1 to
  :data:`~fedpers.server.api.consent_store.USER_ID_MAX` characters.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi import Path as PathParam

from fedpers.server.api.consent_store import USER_ID_MAX
from fedpers.server.api.deps import SettingsDep

__all__ = ["LedgerKeyDep", "UserIdPath", "ledger_key"]


async def ledger_key(settings: SettingsDep) -> bytes:
    """The consent ledger's HMAC key of this service."""
    return settings.ledger_key()


LedgerKeyDep = Annotated[bytes, Depends(ledger_key)]
UserIdPath = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=USER_ID_MAX,
        description="the tenant's reference of the user (never an e-mail address)",
    ),
]
