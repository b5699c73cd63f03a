"""Liveness, readiness and the Prometheus scrape: ``/healthz``, ``/readyz``, ``/metrics``.

None needs a key. ``/readyz`` answers 503 until the engine's model holder has loaded a
model, so a load balancer sends no traffic to a worker that cannot rank yet.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from fedpers.server.api.deps import ModelDep
from fedpers.server.api.errors import problem
from fedpers.server.api.observability import (
    METRICS_CONTENT_TYPE,
    metrics_payload,
    set_model_version,
)

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: a model is loaded",
    responses={503: {"description": "no model loaded yet (problem+json)"}},
)
async def readyz(holder: ModelDep) -> Any:
    """``{"status": "ready", "model_version": N}``, or 503 while no model is loaded."""
    served = holder.current()
    if served is None:
        why = holder.last_error or "the run's registry has no model yet"
        return problem(503, f"not ready: {why}")
    set_model_version(served.version)
    return {"status": "ready", "model_version": served.version}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}},
)
async def metrics(holder: ModelDep) -> Response:
    """The Prometheus text exposition (every worker's values with ``--workers N``)."""
    served = holder.current()
    set_model_version(0 if served is None else served.version)
    return Response(metrics_payload(), media_type=METRICS_CONTENT_TYPE)
