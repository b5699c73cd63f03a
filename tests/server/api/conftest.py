"""Fixtures of the API tests: the tiny run (:mod:`tiny_run_dir`) and the app serving it.

``tiny_run`` is :func:`tiny_run_dir.build_tiny_run` in the test's folder;
``publish(run_dir, round_, shift)`` registers a new model version; ``engine_api`` (alias
``api``) is the app over it with keys of two tenants (:mod:`served_app`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from served_app import EngineApi, serve_app
from tiny_run_dir import Publish, build_tiny_run, publish_model


@pytest.fixture
def publish() -> Publish:
    return publish_model


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    return build_tiny_run(tmp_path / "run")


@pytest.fixture
def engine_api(tiny_run: Path) -> Iterator[EngineApi]:
    """The app over ``tiny_run`` with keys of two tenants (see :mod:`served_app`)."""
    with serve_app(tiny_run) as served:
        yield served


@pytest.fixture
def api(engine_api: EngineApi) -> EngineApi:
    """The same app, under the short name the consent and privacy tests use."""
    return engine_api
