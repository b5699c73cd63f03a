"""Request and response models of the consent and privacy-rights routes.

Requests forbid unknown fields and bound every size, so bad input is a 422 that names
the field. Purposes are TCF v2.2 ids (``5``) or labels (``"P5"``); which ones exist is
decided by :func:`fedpers.privacy.consent.parse_purposes`, never here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

__all__ = [
    "ConsentChange",
    "ConsentHistory",
    "ConsentView",
    "ErasureReceipt",
    "HistoryEntry",
    "ObjectionIn",
    "UserExport",
]

Label = Annotated[str, Field(min_length=1, max_length=64)]
PurposeToken = StrictInt | Annotated[str, Field(min_length=1, max_length=32)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentChange(_Request):
    """Purposes to grant or withdraw, under which policy version and from where."""

    purposes: list[PurposeToken] = Field(
        min_length=1,
        max_length=11,
        description="TCF v2.2 purposes: 1, 5, 6, 10, 11 or 'P1', 'P5', ...",
        examples=[[1, 5, 6, 11]],
    )
    policy_version: Label | None = Field(default=None, examples=["2026-01"])
    source: Label | None = Field(default=None, examples=["web"])


class ObjectionIn(_Request):
    """Where an objection to profiling (or its lifting) came from."""

    source: Label | None = Field(default=None, examples=["privacy-center"])


class ConsentView(BaseModel):
    """The consent a tenant holds for one user, and this request's GPC signal."""

    user_id: str
    granted: list[int] = Field(description="TCF purpose ids granted now")
    objection: bool = Field(description="an Art. 21 objection to profiling is in force")
    policy_version: str | None
    source: str | None
    updated_at: float | None
    gpc: bool = Field(description="Sec-GPC: 1 on this request (no personalisation while set)")
    erased: bool = Field(description="the id is tombstoned (Art. 17)")


class HistoryEntry(BaseModel):
    """One consent decision from the ledger."""

    seq: int
    at: float
    action: str = Field(description="grant, withdraw, object or lift_objection")
    purposes: list[int]
    policy_version: str | None
    source: str | None


class ConsentHistory(BaseModel):
    """A user's consent decisions in this tenant, oldest first."""

    user_id: str
    entries: list[HistoryEntry]


class UserExport(BaseModel):
    """Everything the server holds about a user (GDPR Art. 20), as JSON."""

    user_id: str
    tenant: str
    exported_at: float
    consent: ConsentView | None
    consent_history: list[HistoryEntry]
    stored_elsewhere: list[Any] = Field(
        description="other server records about the user (the API keeps none)"
    )


class ErasureReceipt(BaseModel):
    """What an erasure (GDPR Art. 17) removed."""

    user_id: str
    erased: bool
    already_erased: bool
    consent_rows: int = Field(description="consent state rows deleted")
    ledger_entries_shredded: int = Field(description="ledger entries whose content was shredded")
