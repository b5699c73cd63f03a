"""``POST /v1/feedback``: impressions, clicks and conversions (serve scope).

Feedback only increments aggregate counters, per item and per experiment variant; the
``user_id`` (when sent) only picks the variant by hash bucketing and is not stored.
"""

from __future__ import annotations

from fastapi import APIRouter, status

from fedpers.privacy.errors import DataError
from fedpers.server.api.deps import DbDep, ServeKey
from fedpers.server.api.errors import NotFoundError
from fedpers.server.api.experiments import assign_variant, load_experiment, record_feedback
from fedpers.server.api.serving_deps import ServedDep
from fedpers.server.api.serving_schemas import FeedbackAccepted, FeedbackIn

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback", status_code=status.HTTP_202_ACCEPTED, response_model=FeedbackAccepted)
def post_feedback(
    body: FeedbackIn, key: ServeKey, db: DbDep, served: ServedDep
) -> FeedbackAccepted:
    """Count one impression, click or conversion of an item (no user row is written).

    With ``experiment``, the variant is ``variant`` or, when only ``user_id`` is sent, the
    user's hash bucket; the variant's counters are incremented too. With ``context``,
    the item's counters in each of its ``key=value`` are incremented as well: they teach
    the contextual (non-profiled) ranking what does well where.
    """
    if body.item not in served.index:
        raise DataError(f"unknown item {body.item!r}")
    variant = None
    if body.experiment is not None:
        experiment = load_experiment(db, key.tenant, body.experiment)
        if experiment is None:
            raise NotFoundError(f"no experiment {body.experiment!r} for this tenant")
        if body.variant is not None:
            variant = experiment.variant(body.variant).name
        elif body.user_id is not None:
            variant = assign_variant(experiment, body.user_id).name
        else:
            raise DataError("feedback for an experiment needs its variant or the user_id")
    elif body.variant is not None:
        raise DataError("variant without experiment")
    context = body.context.model_dump(exclude_none=True) if body.context else None
    record_feedback(
        db,
        key.tenant,
        body.item,
        body.kind,
        experiment=body.experiment,
        variant=variant,
        context=context,
    )
    return FeedbackAccepted(accepted=True, experiment=body.experiment, variant=variant)
