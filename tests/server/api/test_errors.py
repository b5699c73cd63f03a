"""Bad input answers 4xx problem+json that says what is wrong; never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fedpers.privacy.errors import ConsentError, DataError, StoreError
from fedpers.server.api.errors import PROBLEM_JSON, GoneError, document_problems, problem_body

REC = "/v1/recommendations"


def _problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    body = r.json()
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"] and "\n" not in body["detail"]
    return dict(body)


def _post(api: Any, content: bytes, content_type: str | None = "application/json") -> Any:
    headers = dict(api.serve_a)
    if content_type is not None:
        headers["content-type"] = content_type
    return api.client.post(REC, content=content, headers=headers)


def test_malformed_json_is_400(engine_api: Any) -> None:
    body = _problem(_post(engine_api, b'{"user_id": "u", "k": '), 400)
    assert body["detail"].startswith("malformed JSON body")


@pytest.mark.parametrize(
    ("payload", "loc", "words"),
    [
        ({"k": 5}, ["body", "user_id"], "required"),
        ({"user_id": "u", "k": "five"}, ["body", "k"], "integer"),
        ({"user_id": "u", "k": 10**9}, ["body", "k"], "less than"),
        ({"user_id": "u", "k": 0}, ["body", "k"], "greater than"),
        ({"user_id": "u", "k": 3, "diversity": "lots"}, ["body", "diversity"], "number"),
    ],
)
def test_validation_errors_name_the_field(
    engine_api: Any, payload: dict[str, Any], loc: list[str], words: str
) -> None:
    body = _problem(engine_api.client.post(REC, json=payload, headers=engine_api.serve_a), 422)
    assert body["title"] == "Unprocessable Content"
    assert body["errors"][0]["loc"] == loc
    assert words in body["errors"][0]["msg"] and words in body["detail"]
    assert body["detail"].startswith(".".join(loc))


def test_a_json_array_or_scalar_body_is_422(engine_api: Any) -> None:
    for raw in (b"[]", b"3", b'"x"', b"null"):
        _problem(_post(engine_api, raw), 422)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_bodies_are_415(engine_api: Any, content_type: str | None) -> None:
    body = _problem(_post(engine_api, b'{"user_id": "u"}', content_type), 415)
    assert "application/json" in body["detail"]


def test_json_media_type_variants_are_accepted(engine_api: Any) -> None:
    r = _post(engine_api, b'{"user_id": "u", "k": 2}', "application/json; charset=utf-8")
    assert r.status_code == 200, r.text


def test_oversized_bodies_are_413_by_length_and_by_counted_bytes(engine_api: Any) -> None:
    limit = engine_api.client.app.state.settings.max_body_bytes
    big = b'{"user_id": "u", "k": 2, "pad": "' + b"x" * limit + b'"}'
    body = _problem(_post(engine_api, big), 413)
    assert str(limit) in body["detail"] and body["title"] == "Content Too Large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, counted as it arrives
        yield b'{"user_id": "u", "k": 2, "pad": "'
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    headers = {**engine_api.serve_a, "content-type": "application/json"}
    r = engine_api.client.post(REC, content=chunks(), headers=headers)
    assert "content-length" not in {k.lower() for k in r.request.headers}
    _problem(r, 413)


def test_unknown_routes_and_methods(engine_api: Any) -> None:
    body = _problem(engine_api.client.get("/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in body["detail"]
    body = _problem(engine_api.client.delete("/healthz"), 405)
    assert "DELETE" in body["detail"]


def test_unknown_items_are_4xx(engine_api: Any) -> None:
    payload = {"user_id": "u", "k": 3, "filters": {"exclude_items": ["no-such-item"]}}
    r = engine_api.client.post(REC, json=payload, headers=engine_api.serve_a)
    assert 400 <= r.status_code < 500
    assert "no-such-item" in _problem(r, r.status_code)["detail"]


def test_library_errors_map_to_4xx_and_unexpected_ones_to_a_bland_500(engine_api: Any) -> None:
    from fastapi import APIRouter

    router = APIRouter()
    raised: dict[str, Exception] = {
        "consent": ConsentError("P5 not granted"),
        "data": DataError("bad item"),
        "gone": GoneError("user erased"),
        "store": StoreError("no model yet"),
        "bug": KeyError("secret internals"),
    }

    @router.get("/_raise/{name}")
    async def _raise(name: str) -> None:
        raise raised[name]

    app = engine_api.client.app
    app.include_router(router)
    c = engine_api.client
    assert _problem(c.get("/_raise/consent"), 403)["detail"] == "P5 not granted"
    assert _problem(c.get("/_raise/data"), 422)["detail"] == "bad item"
    assert _problem(c.get("/_raise/gone"), 410)["detail"] == "user erased"
    assert _problem(c.get("/_raise/store"), 503)["detail"] == "no model yet"
    body = _problem(c.get("/_raise/bug"), 500)
    assert "secret internals" not in body["detail"]


def test_openapi_documents_problem_json_for_every_operation(engine_api: Any) -> None:
    schema = engine_api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            for status in ("4XX", "5XX"):
                assert PROBLEM_JSON in op["responses"][status]["content"], (path, method)
    assert document_problems({"paths": {}})["components"]["schemas"]["Problem"]


def test_problem_body_folds_whitespace() -> None:
    body = problem_body(404, "no\n  such   thing")
    assert body == {"type": "about:blank", "title": "Not Found", "status": 404,
                    "detail": "no such thing"}  # fmt: skip
