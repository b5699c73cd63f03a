"""Prometheus metrics, structured JSON logs and the per-request observation middleware.

Metrics (names fixed by ``docs/dev/api-contract.md``; no label ever holds a user id,
item id or vector: the ``route`` label is the route's template such as
``/v1/users/{user_id}/consent``, never the requested path):

- ``fedpers_api_request_seconds`` histogram (``route``, ``method``, ``status``)
- ``fedpers_api_recommendations_total`` counter (``basis``)
- ``fedpers_api_consent_decisions_total`` counter (``action``, ``purpose``)
- ``fedpers_api_model_version`` gauge

With ``--workers N`` the workers share one prometheus_client multiprocess directory
(``PROMETHEUS_MULTIPROC_DIR``, a fresh temporary folder per ``fedpers serve``, set before
the workers import prometheus_client); ``/metrics`` then sums every worker's values.

Logs: :class:`JsonFormatter` writes one JSON object per line. The access log is one
object per request (:class:`ObservabilityMiddleware`): ``route`` (template), ``method``,
``status``, ``latency_ms``, ``tenant``, ``key_id``, ``request_id``. Request bodies, event
data, user vectors and raw user ids are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "ACCESS_LOGGER",
    "CONSENT_DECISIONS",
    "LATENCY_BUCKETS",
    "METRICS_CONTENT_TYPE",
    "MODEL_VERSION",
    "RECOMMENDATIONS",
    "REQUEST_SECONDS",
    "JsonFormatter",
    "ObservabilityMiddleware",
    "configure_logging",
    "metrics_payload",
    "record_consent_decision",
    "record_recommendation",
    "set_model_version",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ACCESS_LOGGER = "fedpers.api.access"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
)  # fmt: skip

REQUEST_SECONDS = Histogram(
    "fedpers_api_request_seconds",
    "Time to answer one request (seconds), by route template, method and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
RECOMMENDATIONS = Counter(
    "fedpers_api_recommendations",
    "Recommendation answers by basis (personalised, contextual, popular).",
    ["basis"],
)
CONSENT_DECISIONS = Counter(
    "fedpers_api_consent_decisions",
    "Consent decisions: grant/withdraw/object/lift/erase/gpc, by TCF purpose ('all').",
    ["action", "purpose"],
)
MODEL_VERSION = Gauge(
    "fedpers_api_model_version",
    "Registry version of the model being served (0 before one is loaded).",
    multiprocess_mode="livemax",
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LOG_FIELDS = ("route", "method", "status", "latency_ms", "tenant", "key_id", "request_id")
_version_seen: list[int] = [-1]


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per label set (every request uses one)."""
    key = (id(metric), labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def record_recommendation(basis: str) -> None:
    """Count one recommendation answer of ``basis``."""
    _child(RECOMMENDATIONS, basis).inc()


def record_consent_decision(action: str, purpose: str = "all") -> None:
    """Count one consent decision (``purpose`` such as ``P5``, or ``all``)."""
    _child(CONSENT_DECISIONS, action, purpose).inc()


def set_model_version(version: int) -> None:
    """Publish the served model's version (cheap when unchanged)."""
    if _version_seen[0] != version:
        _version_seen[0] = version
        MODEL_VERSION.set(version)


def metrics_payload() -> bytes:
    """The Prometheus text exposition of this process, or of every worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: time, level, logger, message and request fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record``; only the whitelisted request fields are copied."""
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send fedpers and uvicorn logs to stderr, one JSON object per line (or text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(message)s")
    )
    for name in ("fedpers", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(level.upper())
        log.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # raw paths hold user ids
    # Neither format shows the caller, thread or process: skip collecting them for every
    # record (the logging HOWTO's "Optimization"; an access-log record 22 -> 18 us).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = str(value.decode("latin-1"))
            if _REQUEST_ID.match(text):
                return text
    return os.urandom(16).hex()  # 128 random bits, as a uuid4 but cheaper


class ObservabilityMiddleware:
    """Request id, latency histogram and one access-log object per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Observe one request (other scope types pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = _request_id(scope)
        state["request_id"] = request_id
        status = [500]

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            _child(REQUEST_SECONDS, route, scope["method"], str(status[0])).observe(elapsed)
            if self.log.isEnabledFor(logging.INFO):
                self.log.info(
                    "request",
                    extra={
                        "route": route,
                        "method": scope["method"],
                        "status": status[0],
                        "latency_ms": round(elapsed * 1000, 3),
                        "tenant": state.get("tenant"),
                        "key_id": state.get("key_id"),
                        "request_id": request_id,
                    },
                )
