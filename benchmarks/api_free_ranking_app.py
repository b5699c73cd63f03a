"""The real service with its ranking answered from a cache: the request path's ceiling.

``bench_api.py`` serves this app the same way as the service and the trivial endpoint to
measure what the service could reach if the ranking cost nothing: everything else is the
real app of ``fedpers serve`` (middlewares, key authentication, consent read, metrics,
the JSON access log, the response). ``bench_api_breakdown.py`` uses
:func:`ranking_precomputed` in-process for the same purpose.

Served with ``uvicorn --factory api_free_ranking_app:create --app-dir benchmarks``; the
settings come from the ``FEDPERS_API_*`` environment, as for ``app_from_env``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI


@contextmanager
def ranking_precomputed() -> Iterator[None]:
    """The route's ``recommend`` answers from a cache per basis (computed once each)."""
    from fedpers.server.api.routes import recommendations as route

    real = route.recommend
    answers: dict[str, Any] = {}

    def cached(served: Any, query: Any, decision: Any, **kwargs: Any) -> Any:
        if decision.basis not in answers:
            answers[decision.basis] = real(served, query, decision, **kwargs)
        return answers[decision.basis]

    route.recommend = cached  # type: ignore[assignment]
    try:
        yield
    finally:
        route.recommend = real


_PATCHES: list[Any] = []  # the entered patch lives as long as the process


def create() -> FastAPI:
    """``app_from_env()`` with the ranking precomputed for the process's lifetime."""
    from fedpers.server.api.main import app_from_env

    patch = ranking_precomputed()
    patch.__enter__()
    _PATCHES.append(patch)  # dropped, its generator would close and undo the patch
    return app_from_env()
