"""The FastAPI application of ``fedpers serve``: routers, handlers, middleware, lifespan.

Nothing here decides anything: each route module owns its resource, the dependencies in
:mod:`fedpers.server.api.deps` carry settings, database, key and consent signals, and
:mod:`fedpers.server.api.errors` gives every failure one problem+json shape.

The lifespan migrates the database, then starts the engine's
:class:`~fedpers.server.api.model_state.ModelHolder` (it loads the run's latest model and
polls the registry for new versions), moves what start-up created out of the garbage
collector's full passes (``gc.freeze``), and stops the holder at shutdown.

``uvicorn --factory fedpers.server.api.main:app_from_env`` builds the app from
``FEDPERS_API_*`` environment variables: that is how ``fedpers serve --workers N`` starts
each worker.

Example (``fedpers serve`` creates the ledger key on its first start):
    >>> import tempfile
    >>> from pathlib import Path
    >>> from fedpers.server.api.settings import create_ledger_key
    >>> folder = tempfile.TemporaryDirectory()
    >>> settings = ApiSettings(run_dir=Path(folder.name))
    >>> create_app(settings)
    Traceback (most recent call last):
    ...
    fedpers.privacy.errors.ConfigError: ...
    >>> create_ledger_key(settings.ledger_key_file)
    True
    >>> app = create_app(settings)
    >>> "/v1/recommendations" in app.openapi()["paths"]
    True
    >>> folder.cleanup()
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from fedpers.server.api.auth import RateLimiter
from fedpers.server.api.context_lifts import ContextLifts
from fedpers.server.api.db import ConnectionPool, open_api_db
from fedpers.server.api.errors import install_error_handlers, install_problem_openapi
from fedpers.server.api.middleware import BodyGuardMiddleware
from fedpers.server.api.model_state import ModelHolder
from fedpers.server.api.observability import ObservabilityMiddleware, configure_logging
from fedpers.server.api.routes import (
    consent,
    experiments,
    feedback,
    health,
    items,
    model,
    privacy,
    recommendations,
    web,
)
from fedpers.server.api.settings import ApiSettings, load_settings

__all__ = ["API_TITLE", "app_from_env", "create_app"]

API_TITLE = "fedpers personalization API"

_DESCRIPTION = (
    "Consent-aware recommendations from the federation's global model plus the device's "
    "own state (sent per request, never stored). Keys: `Authorization: Bearer <key>`. "
    "Errors are `application/problem+json`. See docs/api.md."
)


def _version() -> str:
    try:
        return version("fedpers")
    except PackageNotFoundError:
        return "0.0.0"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    open_api_db(settings.database_path).conn.close()
    holder: ModelHolder = app.state.model_holder
    holder.start()
    # Everything alive now (the libraries, the app, the loaded model) lives as long as the
    # process: keep it out of the cyclic collector's full passes, which otherwise stall
    # every request for ~20 ms each time they run (measured; the tail of the latency).
    gc.freeze()
    try:
        yield
    finally:
        holder.stop()
        app.state.db_pool.close()


def create_app(settings: ApiSettings) -> FastAPI:
    """The service for ``settings``; fails closed when the ledger key is missing.

    Args:
        settings: what to serve and how.

    Raises:
        ConfigError: a secret (the ledger's HMAC key) is missing or unsafe.
    """
    ledger_key = settings.ledger_key()
    app = FastAPI(
        title=API_TITLE,
        version=_version(),
        description=_DESCRIPTION,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.ledger_key = ledger_key
    app.state.db_pool = ConnectionPool(settings.database_path)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.context_lifts = ContextLifts(settings.context_ttl_s)
    app.state.model_holder = ModelHolder(
        settings.run_dir, reload_interval_s=settings.reload_interval_s
    )
    install_error_handlers(app)
    install_problem_openapi(app)
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(ObservabilityMiddleware)
    # The hot route first: Starlette tries routes in order until one matches.
    for module in (
        recommendations,
        health,
        consent,
        privacy,
        feedback,
        experiments,
        model,
        items,
        web,
    ):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """The app from ``FEDPERS_API_*`` variables, logging configured (uvicorn factory)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
