"""Request-body guards: JSON only (415) and at most ``max_body_bytes`` (413).

:class:`BodyGuardMiddleware` is plain ASGI. A request that carries a body (``POST``,
``PUT``, ``PATCH``, ``DELETE`` with ``Content-Length > 0`` or chunked) must say
``Content-Type: application/json`` (or ``...+json``). The body is read up front and the
bytes are counted as they arrive, so a client that sends more than the limit, with a
lying ``Content-Length`` or none at all (chunked), is answered 413 before the route runs;
the route then reads the buffered body. Both answers are problem+json.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fedpers.server.api.errors import problem
from fedpers.server.api.observability import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_METHODS", "BodyGuardMiddleware", "is_json_media_type"]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_json_media_type(content_type: str) -> bool:
    """Whether a ``Content-Type`` value names JSON (``application/json``, ``*/*+json``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BodyGuardMiddleware:
    """415 for a body that is not JSON, 413 for one over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        """Wrap ``app`` with a limit of ``max_body_bytes``."""
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def _reply(
        self, scope: Scope, receive: Receive, send: Send, status: int, detail: str
    ) -> None:
        response = problem(status, detail)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard one request."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length_text = _header(scope, b"content-length")
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            await self._reply(
                scope, receive, send, 400, f"Content-Length {length_text!r} is not a number"
            )
            return
        if length <= 0 and not chunked:
            await self.app(scope, receive, send)
            return
        content_type = _header(scope, b"content-type") or ""
        if not is_json_media_type(content_type):
            shown = content_type or "none"
            await self._reply(
                scope, receive, send, 415,
                f"Content-Type {shown!r} is not supported: send the body as application/json",
            )  # fmt: skip
            return
        limit = self.max_body_bytes
        try:
            body = None if length > limit else await _read_body(receive, limit)
        except _ClientGone:
            return
        if body is None:
            declared = f" of {length} bytes" if length > limit else ""
            await self._reply(
                scope, receive, send, 413,
                f"request body{declared} is over the limit of {limit} bytes",
            )  # fmt: skip
            return
        sent = [False]

        async def replay() -> Message:
            if not sent[0]:
                sent[0] = True
                out: MutableMapping[str, Any] = {
                    "type": "http.request",
                    "body": body,
                    "more_body": False,
                }
                return out
            return await receive()

        await self.app(scope, replay, send)


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, counted as it arrives; ``None`` once it passes ``limit``.

    Raises:
        _ClientGone: the client disconnected first.
    """
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)
