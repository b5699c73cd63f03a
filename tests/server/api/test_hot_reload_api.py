"""Hot reload under load: a live uvicorn on 127.0.0.1 while new versions are published."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedpers.server.rundb import RunDB

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(tiny_run: Path) -> Iterator[tuple[str, dict[str, str]]]:
    import uvicorn

    from fedpers.server.api.auth import create_api_key
    from fedpers.server.api.db import open_api_db
    from fedpers.server.api.main import create_app
    from fedpers.server.api.settings import ApiSettings, create_ledger_key

    settings = ApiSettings(run_dir=tiny_run, reload_interval_s=0.05, rate_limit_per_s=0.0)
    create_ledger_key(settings.ledger_key_file)
    db = open_api_db(settings.database_path)
    _, secret = create_api_key(db, "shop", ["serve"])
    db.conn.close()
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        server.should_exit = True
        pytest.fail("the server did not become ready")
    try:
        yield url, {"Authorization": f"Bearer {secret}"}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_publishing_during_load_fails_no_request_and_serves_the_new_version(
    live: tuple[str, dict[str, str]], tiny_run: Path, publish: Callable[..., Any]
) -> None:
    url, headers = live
    stop = threading.Event()
    results: list[list[tuple[int, int, str]]] = [[] for _ in range(6)]
    failures: list[str] = []

    def load(slot: int) -> None:
        body = {"user_id": f"u{slot}", "k": 5, "explain": True}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/recommendations", json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text}")
                    continue
                model = r.json()["model"]
                results[slot].append((r.status_code, model["version"], model["sha256"]))

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            if time.monotonic() > deadline or failures:
                stop.set()
                pytest.fail(f"timed out waiting for {what}; failures: {failures[:3]}")
            time.sleep(0.02)

    def answered(version: int) -> bool:
        return any(r and r[-1][1] >= version for r in results)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: all(results), "every load thread's first answer")
    time.sleep(0.3)
    publish(tiny_run, 2, 0.5)  # while the requests keep coming
    wait_for(lambda: answered(2), "an answer from version 2")
    publish(tiny_run, 3, 1.0)
    wait_for(lambda: all(r[-1][1] == 3 for r in results), "every thread on version 3")
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=20)
    assert not failures, failures[:5]
    with RunDB.open(tiny_run) as db:
        registry = {int(r["round"]): r["sha256"] for r in db.models()}
    versions_seen = set()
    for served in results:
        assert served, "a load thread got no answer"
        versions = [v for _, v, _ in served]
        assert versions == sorted(versions), "a thread saw an older version after a newer one"
        for _, version, sha in served:
            assert registry[version] == sha  # each answer names one whole registry version
        versions_seen.update(versions)
    assert versions_seen == {1, 2, 3}
    after = httpx.get(f"{url}/v1/model", headers=headers, timeout=5).json()
    assert after["version"] == 3
    assert all(served[-1][1] == 3 for served in results)
