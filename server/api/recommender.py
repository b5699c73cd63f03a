"""The recommendation use case: consent decision -> basis -> ranking -> exploration.

1. :func:`decide_basis` (pure) picks what the answer may use from the user's consent,
   the request's ``Sec-GPC`` signal and whether personal state came with the request:

   ============  ===========================================================================
   basis         when
   ============  ===========================================================================
   personalised  the tenant knows the user, not erased, P1 + P5 + P6 granted, no Art. 21
                 objection, no ``Sec-GPC: 1``, and the device sent its personal state
   contextual    otherwise, for an unknown user or one who granted P11: public popularity
                 plus the request context (the run's public per-context boosts and the
                 tenant's lifts learned from feedback), no profile (the DSA Art. 38
                 option)
   popular       otherwise: public popularity only
   ============  ===========================================================================

2. :func:`recommend` ranks with the client package's functions
   (:mod:`fedpers.client.inference.ranking`, :func:`~fedpers.client.inference.fold_in.fold_in`,
   :func:`~fedpers.client.session.session_query`): the same code a device runs.
   The personal state (a locally fine-tuned user vector, or the last events folded into
   one) lives only in this call's local variables: it is never stored, logged or counted.
3. Exploration (:mod:`fedpers.server.api.exploration`) fills a share of the slots.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedpers.client.inference.fold_in import fold_in
from fedpers.client.inference.ranking import (
    Basis,
    ItemFilter,
    candidate_mask,
    check_request,
    contextual_scores,
    explain_items,
    profile_scores,
    select_items,
)
from fedpers.client.session import session_query
from fedpers.privacy.consent import Purpose
from fedpers.privacy.errors import DataError
from fedpers.server.api.context_lifts import SparseBoost, add_boosts
from fedpers.server.api.exploration import exploration_pool, explore_slots, thompson_pick
from fedpers.server.api.model_state import ServedModel

__all__ = [
    "FOLD_IN_LR",
    "FOLD_IN_STEPS",
    "MAX_EVENTS",
    "MAX_VECTOR_NORM",
    "PERSONALISE_PURPOSES",
    "BasisDecision",
    "ConsentView",
    "PersonalState",
    "RankedItem",
    "RecommendationQuery",
    "RecommendationResult",
    "decide_basis",
    "recommend",
]

PERSONALISE_PURPOSES = frozenset(
    {Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES, Purpose.USE_PROFILES}
)
"""Purposes that must all be granted for a personalised answer (P1, P5, P6)."""

#: At most this many events may be folded into one request.
MAX_EVENTS = 256
#: A sent user vector's L2 norm must not exceed this (trained vectors are far smaller).
MAX_VECTOR_NORM = 1000.0
#: Fold-in of a request's events from a zero (or the sent) vector: steps and step size.
#: 10 steps of 0.25 move ``u`` as far as the device's bootstrap (50 steps of 0.05) in a
#: fifth of the time (per-request latency).
FOLD_IN_STEPS = 10
FOLD_IN_LR = 0.25
FOLD_IN_L2 = 0.01


class ConsentView(Protocol):
    """What the decision reads of a user's consent (``consent_store.UserConsent``)."""

    @property
    def known(self) -> bool:
        """The tenant has a consent record for this user."""

    @property
    def erased(self) -> bool:
        """The user id is tombstoned (Art. 17)."""

    @property
    def granted(self) -> frozenset[Purpose]:
        """Purposes granted."""

    @property
    def objection(self) -> bool:
        """Art. 21 objection to profiling."""


@dataclass(frozen=True)
class BasisDecision:
    """What a response may be based on, and why (said in the response)."""

    basis: Basis
    reason: str

    @property
    def personalised(self) -> bool:
        """Whether the answer uses the user's personal state."""
        return self.basis == "personalised"


def _names(purposes: Sequence[Purpose]) -> str:
    labels = [f"P{int(p)}" for p in purposes]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def decide_basis(
    consent: ConsentView, gpc: bool, has_state: bool, state_kind: str = "personal state"
) -> BasisDecision:
    """The basis of one answer (pure; see the module docstring for the table).

    Args:
        consent: the user's consent as the tenant holds it.
        gpc: ``Sec-GPC: 1`` on this request.
        has_state: the request carries personal state.
        state_kind: how the reason names that state.
    """
    fallback: Basis = (
        "contextual"
        if not consent.known or Purpose.LIMITED_DATA_SELECTION in consent.granted
        else "popular"
    )
    unused = "; the personal state sent was not used" if has_state else ""
    if consent.erased:
        return BasisDecision("popular", f"the user id is erased (Art. 17){unused}: popularity only")
    if not consent.known:
        why = "unknown user (no consent on record)"
    elif consent.objection:
        why = "the user objected to profiling (Art. 21)"
    elif gpc:
        why = "Sec-GPC: 1 is set on this request"
    elif missing := sorted(PERSONALISE_PURPOSES - consent.granted):
        why = f"{_names(missing)} not granted"
    elif not has_state:
        why = "no personal state was sent (cold start)"
    else:
        return BasisDecision(
            "personalised", f"P1, P5 and P6 granted and a local {state_kind} was sent"
        )
    why += unused
    if fallback == "contextual":
        tail = (
            "popularity and the request context (P11), no profile"
            if consent.known
            else "popularity and the request context, no profile"
        )
    else:
        tail = "popularity only (P11 not granted)"
    return BasisDecision(fallback, f"{why}: {tail}")


@dataclass(frozen=True)
class PersonalState:
    """The device's state for one request only (never stored).

    Attributes:
        user_vector: its locally fine-tuned private user vector.
        events: item ids of its last events, oldest first.
    """

    user_vector: Sequence[float] | None = None
    events: Sequence[str] | None = None

    @property
    def kind(self) -> str:
        """How a reason names it."""
        if self.user_vector is not None and self.events:
            return "user vector and its latest events"
        return "user vector" if self.user_vector is not None else "event history"


@dataclass(frozen=True)
class RecommendationQuery:
    """One validated ``POST /v1/recommendations`` request."""

    user_id: str
    k: int = 10
    context: Mapping[str, Any] = field(default_factory=dict)
    exclude_items: Sequence[str] = ()
    categories: Sequence[str] = ()
    diversity: float = 0.0
    explain: bool = True
    exploration: float = 0.0
    state: PersonalState | None = None


@dataclass(slots=True)
class RankedItem:
    """One recommended item: its id, title, score, rank, whether it was explored, and why.

    The response model lists these as they are (``RecommendationResponse.items``). Not
    frozen: a frozen dataclass costs four times as much to build, ten per request.
    """

    item: str
    title: str
    score: float
    rank: int
    explored: bool
    explanation: str | None


@dataclass(frozen=True)
class RecommendationResult:
    """The answer (without experiment bookkeeping, which the route adds)."""

    request_id: str
    decision: BasisDecision
    version: int
    sha256: str
    items: list[RankedItem]


#: ``counters(item_ids) -> {item: (impressions, clicks)}``: the tenant's aggregate feedback.
Counters = Callable[[Sequence[str]], Mapping[str, tuple[int, int]]]
#: ``context_boosts() -> [(indices, lifts), ...]``: the tenant's learned lifts for the
#: request's context (:class:`~fedpers.server.api.context_lifts.ContextLifts`).
ContextBoosts = Callable[[], Sequence[SparseBoost]]


def _unknown(items: Sequence[str], index: Mapping[str, int], what: str) -> None:
    unknown = sorted({i for i in items if i not in index})
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise DataError(f"unknown items in {what}: {shown}{more}")


def _boosted(served: ServedModel, context: Mapping[str, Any]) -> bool:
    """Whether any ``"key=value"`` of ``context`` has a popularity boost."""
    boosts = served.context_popularity
    return bool(boosts) and any(f"{k}={v}" in boosts for k, v in context.items())


def _state_query(served: ServedModel, state: PersonalState) -> tuple[np.ndarray, np.ndarray]:
    """The ranking query and the history (model indices) from the personal state."""
    model = served.model
    if state.user_vector is not None:
        vector = np.asarray(state.user_vector, dtype=np.float64)
        if vector.shape != (served.dim,):
            raise DataError(
                f"personal_state.user_vector has {vector.size} values, the model needs {served.dim}"
            )
        if not np.all(np.isfinite(vector)):
            raise DataError("personal_state.user_vector holds a non-finite value")
        norm = float(np.linalg.norm(vector))
        if norm > MAX_VECTOR_NORM:
            raise DataError(
                f"personal_state.user_vector has L2 norm {norm:.3g} > {MAX_VECTOR_NORM:g}"
            )
        start = vector.astype(np.float32)
    else:
        start = np.zeros(served.dim, dtype=np.float32)
    history = np.zeros(0, dtype=np.int64)
    if state.events:
        if len(state.events) > MAX_EVENTS:
            raise DataError(f"personal_state.events has {len(state.events)} > {MAX_EVENTS}")
        _unknown(state.events, served.index, "personal_state.events")
        history = np.asarray([served.index[i] for i in state.events], dtype=np.int64)
        rng = np.random.default_rng(len(history))  # the negatives; deterministic per request
        start = fold_in(
            start,
            model.item_vectors,
            model.item_bias,
            history,
            FOLD_IN_STEPS,
            FOLD_IN_LR,
            rng,
            l2=FOLD_IN_L2,
        )
    query = session_query(start, model.item_vectors, history, served.session)
    return query, history


def recommend(
    served: ServedModel,
    query: RecommendationQuery,
    decision: BasisDecision,
    *,
    counters: Counters | None = None,
    context_boosts: ContextBoosts | None = None,
    rng: np.random.Generator | None = None,
) -> RecommendationResult:
    """Rank ``query.k`` items on ``decision``'s basis with one served model.

    Args:
        served: the model taken once at the start of the request.
        query: the validated request.
        decision: from :func:`decide_basis`.
        counters: the tenant's aggregate feedback (for exploration).
        context_boosts: the tenant's learned per-context lifts (contextual basis only).
        rng: generator of the exploration draws (fresh entropy when ``None``).

    Raises:
        DataError: unknown items or categories, or invalid personal state.
        ConfigError: ``k`` < 1, or diversity/exploration outside [0, 1].
    """
    check_request(query.k, query.diversity)
    n_explore = explore_slots(query.k, query.exploration)
    model = served.model
    _unknown(query.exclude_items, served.index, "filters.exclude_items")
    history = np.zeros(0, dtype=np.int64)
    learned: Sequence[SparseBoost] = ()
    if decision.basis == "contextual" and context_boosts is not None and query.context:
        learned = context_boosts()
    if decision.personalised and query.state is not None:
        q, history = _state_query(served, query.state)
        scores = profile_scores(model.item_vectors, model.item_bias, q)
    elif decision.basis == "contextual" and (learned or _boosted(served, query.context)):
        scores = contextual_scores(served.popularity, served.context_popularity, query.context)
        add_boosts(scores, learned)
    else:
        scores = served.popularity
    mask = candidate_mask(
        model.item_ids, served.index, ItemFilter(block=frozenset(query.exclude_items))
    )
    if query.categories:
        mask &= served.catalogue.category_mask(query.categories)
    if history.size:
        mask[history] = False  # the device has seen them already
    n_exploit = query.k - n_explore
    selectable = mask
    if scores is served.popularity and served.popular_order.size == mask.size:
        # The plain popularity ranking is precomputed: only its best candidates compete.
        ranked = served.popular_order[mask[served.popular_order]]
        selectable = np.zeros_like(mask)
        selectable[ranked[: max(10 * n_exploit, 100)]] = True
    chosen = select_items(
        scores,
        selectable,
        n_exploit,
        query.diversity,
        model.item_vectors,
        unit_vectors=served.unit_vectors,
    )
    explored: list[int] = []
    if n_explore:
        rest = mask.copy()
        rest[chosen] = False
        generator = rng if rng is not None else np.random.default_rng()
        pool = exploration_pool(np.flatnonzero(rest), scores, generator)
        ids = [model.item_ids[i] for i in pool]
        known = counters(ids) if counters is not None else {}
        shown = np.asarray([known.get(i, (0, 0))[0] for i in ids], dtype=np.int64)
        clicked = np.asarray([known.get(i, (0, 0))[1] for i in ids], dtype=np.int64)
        explored = thompson_pick(pool, shown, clicked, n_explore, generator)
    texts: list[str | None] = [None] * (len(chosen) + len(explored))
    if query.explain:
        texts = [
            *explain_items(
                chosen,
                decision.basis,
                item_ids=model.item_ids,
                item_vectors=model.item_vectors,
                cold_items=model.cold_items,
                history=history,
                context=query.context,
                unit_vectors=served.unit_vectors,
            ),
            *["exploring: shown to learn how people respond to it"] * len(explored),
        ]
    items = [
        RankedItem(
            item=model.item_ids[i],
            title=served.catalogue.titles[i],
            score=float(scores[i]),
            rank=rank,
            explored=rank > len(chosen),
            explanation=text,
        )
        for rank, (i, text) in enumerate(zip([*chosen, *explored], texts, strict=True), start=1)
    ]
    return RecommendationResult(
        request_id=os.urandom(16).hex(),  # 128 random bits, as a uuid4 but cheaper
        decision=decision,
        version=served.version,
        sha256=served.sha256,
        items=items,
    )
