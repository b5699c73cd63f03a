"""``POST /v1/recommendations``: consent-aware recommendations (serve scope).

The route only wires: consent (platform) -> experiment variant -> basis decision ->
ranking (:mod:`fedpers.server.api.recommender`) -> the basis counter. The request's
``personal_state`` goes to the ranking and nowhere else: it is not logged, stored or used
as a metric label.
"""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter, Response

from fedpers.server.api.consent_store import load_user_consent
from fedpers.server.api.errors import NotFoundError
from fedpers.server.api.experiments import assign_variant, item_counters, load_experiment
from fedpers.server.api.observability import record_recommendation
from fedpers.server.api.recommender import (
    PersonalState,
    RecommendationQuery,
    decide_basis,
    recommend,
)
from fedpers.server.api.serving_deps import ServingDep
from fedpers.server.api.serving_schemas import (
    ExperimentRef,
    ModelRef,
    RecommendationRequest,
    RecommendationResponse,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["recommendations"])

#: Catalogues with more scoring work (items x dim) are ranked in a worker thread, so the
#: event loop keeps parsing other requests meanwhile (numpy releases the GIL); smaller
#: ones are ranked inline, which is cheaper than the thread hand-off.
INLINE_WORK = 2_000_000
#: At most this many large rankings run at once. Each streams the whole item table
#: (25.6 MB at 100,000 x 64): two at once on a small machine thrash the cache and memory
#: bandwidth, so a short burst would slow every request down and the queue would grow.
RANKING_THREADS = 1
_RANKING_SLOTS = anyio.CapacityLimiter(RANKING_THREADS)  # one per process


@router.post("/recommendations", response_model=RecommendationResponse)
async def post_recommendations(body: RecommendationRequest, ctx: ServingDep) -> Response:
    """Rank ``k`` items for a user, personalised only when consent and state allow it.

    Personalised needs P1, P5 and P6, no objection, no ``Sec-GPC: 1`` and the device's
    ``personal_state`` (its local user vector or last events) with this request; otherwise
    the answer is non-personalised (popularity and context) and says why.
    """
    tenant, served = ctx.key.tenant, ctx.served
    with ctx.pool.connection() as db:
        diversity, exploration, ref = body.diversity, body.exploration, None
        if body.experiment is not None:
            experiment = load_experiment(db, tenant, body.experiment)
            if experiment is None:
                raise NotFoundError(f"no experiment {body.experiment!r} for this tenant")
            variant = assign_variant(experiment, body.user_id)
            ref = ExperimentRef(id=experiment.id, variant=variant.name)
            diversity = variant.diversity if variant.diversity is not None else diversity
            exploration = variant.exploration if variant.exploration is not None else exploration
        sent = body.personal_state
        state = None
        if sent is not None:
            events = None if sent.events is None else [e.item for e in sent.events]
            state = PersonalState(user_vector=sent.user_vector, events=events)
        consent = load_user_consent(db, tenant, body.user_id)
        kind = state.kind if state else "state"
        decision = decide_basis(consent, ctx.gpc, state is not None, kind)
        query = RecommendationQuery(
            user_id=body.user_id,
            k=body.k,
            context=body.context.model_dump(exclude_none=True),
            exclude_items=body.filters.exclude_items,
            categories=body.filters.categories,
            diversity=diversity or 0.0,
            explain=body.explain,
            exploration=exploration or 0.0,
            state=state,
        )
        context_boosts = partial(
            ctx.context_lifts.boosts, db, tenant, query.context, served.index, served.sha256
        )
        rank = partial(
            recommend,
            served,
            query,
            decision,
            counters=partial(item_counters, db, tenant),
            context_boosts=context_boosts,
        )
        if served.n_items * served.dim <= INLINE_WORK:
            result = rank()
        else:
            result = await anyio.to_thread.run_sync(rank, limiter=_RANKING_SLOTS)
    record_recommendation(decision.basis)
    answer = RecommendationResponse(
        request_id=result.request_id,
        personalised=decision.personalised,
        basis=decision.basis,
        reason=decision.reason,
        model=ModelRef(version=result.version, sha256=result.sha256),
        experiment=ref,
        items=result.items,
    )
    # Validated once above, serialised once here (a returned model would be re-validated).
    return Response(answer.model_dump_json(), media_type="application/json")
