"""Dependencies of the serving routes: the model a request is answered with.

:data:`ServedDep` takes the holder's current :class:`~fedpers.server.api.model_state.ServedModel`
once, at the start of the request; the request keeps it even if a reload swaps in a new
version meanwhile. Before any model is loaded it answers 503 (``StoreError``).

:data:`ServingDep` is what ``POST /v1/recommendations`` needs in one dependency: the
``serve`` key (authenticated, rate-limited), the ``Sec-GPC`` signal, the served model,
the connection pool and the cache of learned context lifts. One dependency instead of
several keeps FastAPI's per-request dependency solving off the hot path; the checks are
the same functions the other routes' dependencies call (:func:`~fedpers.server.api.deps.authorize`,
:func:`~fedpers.server.api.deps.read_gpc`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from fedpers.privacy.errors import StoreError
from fedpers.server.api.auth import ApiKey
from fedpers.server.api.context_lifts import ContextLifts
from fedpers.server.api.db import ConnectionPool
from fedpers.server.api.deps import ModelDep, authorize, get_model_holder, get_pool, read_gpc
from fedpers.server.api.model_state import ModelHolder, ServedModel
from fedpers.server.api.observability import set_model_version

__all__ = ["ServedDep", "Serving", "ServingDep", "current_model", "served_model", "serving"]


def current_model(holder: ModelHolder) -> ServedModel:
    """The holder's model for this request (the model-version gauge follows it).

    Raises:
        StoreError: no model is loaded yet (503).
    """
    served = holder.current()
    if served is None:
        why = f" ({holder.last_error})" if holder.last_error else ""
        raise StoreError(f"no model is loaded yet{why}")
    set_model_version(served.version)
    return served


async def served_model(holder: ModelDep) -> ServedModel:
    """:func:`current_model` as a dependency."""
    return current_model(holder)


@dataclass(frozen=True)
class Serving:
    """What one recommendation request is answered with.

    Attributes:
        key: the request's ``serve`` key; ``key.tenant`` scopes every read.
        gpc: the request carries ``Sec-GPC: 1``.
        served: the model taken once for this request.
        pool: this process's connections to the API database.
        context_lifts: this process's cache of the tenants' learned context lifts.
    """

    key: ApiKey
    gpc: bool
    served: ServedModel
    pool: ConnectionPool
    context_lifts: ContextLifts


async def serving(request: Request) -> Serving:
    """Authorize (``serve`` scope), read ``Sec-GPC`` and take the model, in that order.

    Raises:
        AuthenticationError, PermissionDeniedError, RateLimitedError: from
            :func:`~fedpers.server.api.deps.authorize`.
        StoreError: no model is loaded yet (503).
    """
    key = authorize(request, "serve")
    gpc = read_gpc(request)
    served = current_model(await get_model_holder(request))
    lifts: ContextLifts = request.app.state.context_lifts
    return Serving(key=key, gpc=gpc, served=served, pool=get_pool(request), context_lifts=lifts)


ServedDep = Annotated[ServedModel, Depends(served_model)]
ServingDep = Annotated[Serving, Depends(serving)]
