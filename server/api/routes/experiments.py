"""``POST /v1/experiments`` (admin scope) and ``GET /v1/experiments/{id}`` (serve scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from fedpers.server.api.deps import AdminKey, DbDep, ServeKey
from fedpers.server.api.errors import ConflictError, NotFoundError
from fedpers.server.api.experiments import (
    Experiment,
    Variant,
    create_experiment,
    experiment_report,
    load_experiment,
)
from fedpers.server.api.serving_schemas import ExperimentCreate, ExperimentPublic, ExperimentReport

__all__ = ["router"]

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

ExperimentId = Annotated[str, Path(min_length=1, max_length=100)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ExperimentPublic)
def post_experiment(body: ExperimentCreate, key: AdminKey, db: DbDep) -> ExperimentPublic:
    """Create an A/B experiment of the key's tenant (users are bucketed by hash)."""
    if load_experiment(db, key.tenant, body.id) is not None:
        raise ConflictError(f"experiment {body.id!r} already exists")
    variants = tuple(Variant(**v.model_dump()) for v in body.variants)
    stored = create_experiment(db, Experiment(key.tenant, body.id, variants))
    return ExperimentPublic(
        id=stored.id, created_at=stored.created_at, variants=[v.to_dict() for v in variants]
    )


@router.get("/{experiment_id}", response_model=ExperimentReport)
def get_experiment(experiment_id: ExperimentId, key: ServeKey, db: DbDep) -> ExperimentReport:
    """Per variant: impressions, clicks, conversions, CTR and conversion rate (Wilson 95 %)."""
    experiment = load_experiment(db, key.tenant, experiment_id)
    if experiment is None:
        raise NotFoundError(f"no experiment {experiment_id!r} for this tenant")
    return ExperimentReport.model_validate(experiment_report(db, experiment))
