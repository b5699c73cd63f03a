"""Schemathesis fuzzes the live server's OpenAPI schema: no 5xx, responses as documented.

A real ``fedpers serve`` (uvicorn on 127.0.0.1) serves a tiny run; every operation gets
schema-valid and schema-violating requests with an admin key (admin includes serve) and
each answer must be below 500, of a documented status and content type, and match its
schema (errors are problem+json). The fast test sends a few cases per operation; the
slow one many more.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_serve import LiveServer, create_key, live_serve
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tiny_run_dir import build_tiny_run

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    run_dir = build_tiny_run(root / "run")
    key = create_key(run_dir, "fuzz", "admin", rate=0)
    with live_serve(run_dir, root, "--reload-interval", "0") as server:
        yield server, key
        assert "Traceback" not in server.log.read_text()


def _fuzz(live: tuple[LiveServer, str], examples: int, derandomize: bool) -> int:
    """Fuzz every operation with ``examples`` positive and negative cases; return the count."""
    server, key = live
    api = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    sent = [0]
    for result in api.get_all_operations():
        operation = result.ok()
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=derandomize,
            database=None,
        )
        def fuzz_one(case: Any) -> None:
            sent[0] += 1
            case.call_and_validate(base_url=server.base, headers=headers, checks=CHECKS)

        fuzz_one()
    return sent[0]


def test_fuzz_no_5xx_and_schema_conformant(live: tuple[LiveServer, str]) -> None:
    assert _fuzz(live, examples=15, derandomize=True) > 100


@pytest.mark.slow
def test_fuzz_long(live: tuple[LiveServer, str]) -> None:
    assert _fuzz(live, examples=200, derandomize=False) > 1000
