"""One error shape for every API failure: ``application/problem+json`` (RFC 9457).

Every response that is not a success carries::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "one line that says what is wrong",
     "errors": [{"loc": ["body", "k"], "msg": "..."}]}

Bad input never becomes a 5xx: validation errors are 422 with the location and message of
each problem, malformed JSON 400, an unknown route 404, a wrong method 405. Library errors
(:class:`~fedpers.privacy.errors.FedpersError`) map to 4xx by kind
(:data:`FEDPERS_STATUS`); the API's own conditions are :class:`ApiError` subclasses that
carry their status. Only an unexpected exception is a 500, with a detail that names no
internals (the traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedpers.privacy.errors import (
    ConfigError,
    ConsentError,
    DataError,
    FedpersError,
    StoreError,
)

__all__ = [
    "FEDPERS_STATUS",
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "ApiError",
    "AuthenticationError",
    "ConflictError",
    "GoneError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "document_problems",
    "install_error_handlers",
    "install_problem_openapi",
    "problem",
    "problem_body",
]

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(FedpersError):
    """A request the API refuses on purpose; ``status`` is its HTTP status (4xx)."""

    status: int = 400

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        """Carry ``detail`` (one line for the client) and extra response headers."""
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class AuthenticationError(ApiError):
    """No API key, an unknown key or a revoked one (401)."""

    status = 401


class PermissionDeniedError(ApiError):
    """The key lacks the scope the route needs (403)."""

    status = 403


class NotFoundError(ApiError):
    """The resource does not exist for this tenant (404)."""

    status = 404


class ConflictError(ApiError):
    """The resource exists already (409)."""

    status = 409


class GoneError(ApiError):
    """The user was erased (Art. 17) and the id is tombstoned (410)."""

    status = 410


class RateLimitedError(ApiError):
    """The key's token bucket is empty (429 with ``Retry-After``)."""

    status = 429

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        """Carry the whole seconds after which a retry can succeed."""
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


FEDPERS_STATUS: tuple[tuple[type[FedpersError], int], ...] = (
    (ConsentError, 403),
    (DataError, 422),
    (ConfigError, 422),
    (StoreError, 503),
)
"""Library errors that reach the edge, most specific first (anything else: 400)."""


_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}
"""RFC 9110 names where Python's :class:`http.HTTPStatus` keeps the older ones."""


def problem_body(
    status: int, detail: str, errors: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The problem+json object of one error.

    Args:
        status: the HTTP status.
        detail: one line that says what is wrong.
        errors: per-field problems (``loc``, ``msg``), when there are any.
    """
    try:
        title = _TITLES.get(status) or HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": " ".join(detail.split()) or title,
    }
    if errors:
        body["errors"] = [dict(e) for e in errors]
    return body


def problem(
    status: int,
    detail: str,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    return JSONResponse(
        problem_body(status, detail, errors),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def _loc(loc: Sequence[Any]) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in loc]


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = _loc(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value"))
        out.append({"loc": loc, "msg": msg, "type": str(err.get("type", "value_error"))})
    return out


def _where(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc) or "request"


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)  # registered for this type only
    errors = _validation_errors(exc)
    invalid_json = [e for e in errors if e["type"] == "json_invalid"]
    if invalid_json:
        ctx = exc.errors()[0].get("ctx") or {}
        reason = ctx.get("error", "invalid JSON")
        return problem(400, f"malformed JSON body: {reason}", invalid_json)
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem(422, f"{_where(first['loc'])}: {first['msg']}{more}", errors)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)  # registered for this type only
    status = exc.status_code
    if status == 404 and exc.detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /docs"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    return problem(status, detail, headers=getattr(exc, "headers", None))


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(ApiError, exc)  # registered for this type only
    return problem(exc.status, exc.detail, headers=exc.headers)


async def _on_fedpers(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in FEDPERS_STATUS if isinstance(exc, kind)), 400)
    if status >= 500:
        logger.warning("service unavailable: %s", exc)
    return problem(status, str(exc))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.scope.get("path"))
    return problem(500, "internal error (logged on the server)")


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(FedpersError, _on_fedpers)
    app.add_exception_handler(Exception, _on_unexpected)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say what errors really look like (in place, returned).

    Every operation's 422 is the problem+json shape (not FastAPI's default), and every
    operation documents ``4XX`` and ``5XX`` as problem+json.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, response in list(responses.items()):
                if status.startswith(("4", "5")):
                    response["content"] = content
            responses.setdefault("422", {"description": "Validation Error"})["content"] = content
            responses.setdefault(
                "4XX", {"description": "Client error (problem+json)", "content": content}
            )
            responses.setdefault(
                "5XX", {"description": "Server error (problem+json)", "content": content}
            )
    return schema


def install_problem_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` so ``/openapi.json`` documents problem+json errors."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(original())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
