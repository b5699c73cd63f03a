"""Request and response models of the serving routes, one per role.

The routes: recommendations, feedback, experiments, model and items.

Requests forbid unknown fields and bound every size (``k``, list lengths, string lengths,
vector width), so bad input is a 422 that names the field, never a 5xx. Floats must be
finite (``NaN`` and ``Infinity`` are refused even though Python's JSON parser reads them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedpers.client.store import EventType
from fedpers.server.api.experiments import FeedbackKind
from fedpers.server.api.recommender import MAX_EVENTS, RankedItem

__all__ = [
    "MAX_K",
    "Context",
    "EventIn",
    "ExperimentCreate",
    "ExperimentPublic",
    "ExperimentReport",
    "FeedbackAccepted",
    "FeedbackIn",
    "Filters",
    "ItemPage",
    "ItemPublic",
    "ModelPublic",
    "ModelRef",
    "PersonalStateIn",
    "PrivacyGuarantee",
    "Rate",
    "RecommendationRequest",
    "RecommendationResponse",
    "VariantIn",
    "VariantReport",
]

MAX_K = 100
MAX_DIM = 1024
Id = Annotated[str, Field(min_length=1, max_length=200)]
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Context(_Request):
    """The request context (P11 contextual popularity); no user data."""

    device: Annotated[str, Field(min_length=1, max_length=32)] | None = Field(
        default=None, examples=["mobile"]
    )
    hour: int | None = Field(default=None, ge=0, le=23, examples=[21])
    locale: str | None = Field(
        default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", examples=["en-US"]
    )


class Filters(_Request):
    """Which items may be recommended."""

    exclude_items: list[Id] = Field(default_factory=list, max_length=1000)
    categories: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=50, description="items in any of these categories"
    )


class EventIn(_Request):
    """One of the device's latest events."""

    item: Id
    kind: EventType = EventType.CLICK
    at: Finite | None = None


class PersonalStateIn(_Request):
    """The device's state for this request only: never stored, logged or counted."""

    user_vector: list[Finite] | None = Field(
        default=None, min_length=1, max_length=MAX_DIM, description="locally fine-tuned vector"
    )
    events: list[EventIn] | None = Field(
        default=None, min_length=1, max_length=MAX_EVENTS, description="last events, oldest first"
    )

    @model_validator(mode="after")
    def _one_of(self) -> PersonalStateIn:
        if self.user_vector is None and self.events is None:
            raise ValueError("personal_state needs user_vector or events")
        return self


class RecommendationRequest(_Request):
    """``POST /v1/recommendations``."""

    user_id: Id
    k: int = Field(default=10, ge=1, le=MAX_K)
    context: Context = Field(default_factory=Context)
    filters: Filters = Field(default_factory=Filters)
    diversity: Unit | None = Field(default=None, description="MMR lambda; default 0")
    explain: bool = True
    exploration: Unit | None = Field(default=None, description="share of explored slots")
    experiment: Id | None = None
    personal_state: PersonalStateIn | None = None


class ModelRef(BaseModel):
    """The model version an answer came from."""

    version: int
    sha256: str


class ExperimentRef(BaseModel):
    """The experiment variant an answer was served with."""

    id: str
    variant: str


class RecommendationResponse(BaseModel):
    """The answer: items, and whether and why it is personalised."""

    request_id: str
    personalised: bool
    basis: Literal["personalised", "contextual", "popular"]
    reason: str
    model: ModelRef
    experiment: ExperimentRef | None = None
    items: list[RankedItem]


class FeedbackIn(_Request):
    """``POST /v1/feedback``: one impression, click or conversion (aggregate counters only)."""

    item: Id
    kind: FeedbackKind
    request_id: Annotated[str, Field(max_length=200)] | None = None
    user_id: Id | None = Field(default=None, description="only to find the variant; not stored")
    experiment: Id | None = None
    variant: Id | None = None
    context: Context | None = Field(
        default=None,
        description="the context the item was shown in: feeds the contextual ranking's "
        "per-context lifts (aggregate counters only)",
    )


class FeedbackAccepted(BaseModel):
    """The feedback was counted."""

    accepted: bool
    experiment: str | None = None
    variant: str | None = None


class VariantIn(_Request):
    """One variant of a new experiment."""

    name: Id
    weight: float = Field(default=1.0, gt=0.0, le=1e6, allow_inf_nan=False)
    exploration: Unit | None = None
    diversity: Unit | None = None


class ExperimentCreate(_Request):
    """``POST /v1/experiments``."""

    id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
    variants: list[VariantIn] = Field(min_length=1, max_length=20)


class ExperimentPublic(BaseModel):
    """A stored experiment."""

    id: str
    created_at: float
    variants: list[dict[str, Any]]


class Rate(BaseModel):
    """A proportion with its Wilson 95 % interval (``value`` is null without trials)."""

    value: float | None
    ci95: list[float]


class VariantReport(BaseModel):
    """Counters and rates of one variant."""

    name: str
    weight: float
    exploration: float | None
    diversity: float | None
    impressions: int
    clicks: int
    conversions: int
    ctr: Rate
    conversion_rate: Rate


class ExperimentReport(BaseModel):
    """``GET /v1/experiments/{id}``."""

    id: str
    created_at: float
    variants: list[VariantReport]


class PrivacyGuarantee(BaseModel):
    """The model's differential-privacy guarantee (``epsilon`` null: not private)."""

    epsilon: float | None
    delta: float | None
    unit: str | None
    accountant: str | None
    mechanism: str | None
    label: str | None = None
    secure_aggregation: str | None = None


class ModelPublic(BaseModel):
    """``GET /v1/model``."""

    version: int
    round: int
    sha256: str
    created_at: float
    n_items: int
    dim: int
    privacy: PrivacyGuarantee
    download: str


class ItemPublic(BaseModel):
    """One catalogue item."""

    item: str
    title: str
    categories: list[str]


class ItemPage(BaseModel):
    """``GET /v1/items``."""

    total: int
    offset: int
    limit: int
    categories: list[str]
    items: list[ItemPublic]
