"""``fedpers serve --workers 2`` as a real process: concurrent writes are all kept, once.

Several uvicorn workers share the SQLite file (WAL, ``BEGIN IMMEDIATE`` writes) and one
prometheus_client multiprocess directory.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from live_serve import FEDPERS, create_key, live_serve

pytestmark = pytest.mark.integration

THREADS, PER_THREAD = 8, 25


def _post(url: str, body: dict[str, object], key: str) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_two_workers_keep_every_concurrent_write(tiny_run: Path, tmp_path: Path) -> None:
    key = create_key(tiny_run, "shop-a", rate=0)
    with live_serve(tiny_run, tmp_path, "--workers", "2") as server:
        url = f"{server.base}/v1/feedback"

        def burst(n: int) -> list[int]:
            item = f"i{n % 4}"
            return [_post(url, {"item": item, "kind": "click"}, key) for _ in range(PER_THREAD)]

        with ThreadPoolExecutor(THREADS) as pool:
            codes = [c for chunk in pool.map(burst, range(THREADS)) for c in chunk]
        with urllib.request.urlopen(f"{server.base}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        log = server.log.read_text()
    assert codes == [202] * (THREADS * PER_THREAD)
    conn = sqlite3.connect(tiny_run / "api.db")
    rows = dict(conn.execute("SELECT item, clicks FROM engine_item_counters WHERE tenant='shop-a'"))
    assert rows == {f"i{j}": PER_THREAD * THREADS // 4 for j in range(4)}
    # both workers started, and /metrics (answered by one of them) sums every worker
    pids = set(re.findall(r"Started server process \[(\d+)\]", log))
    assert len(pids) == 2, log
    counted = re.search(
        r'fedpers_api_request_seconds_count\{method="POST",route="/v1/feedback",status="202"\} '
        r"([0-9.]+)",
        metrics,
    )
    assert counted is not None and float(counted.group(1)) == THREADS * PER_THREAD
    assert "Traceback" not in log


def test_two_workers_append_concurrent_consent_to_one_unbroken_chain(
    tiny_run: Path, tmp_path: Path
) -> None:
    key = create_key(tiny_run, "shop-a", rate=0)
    users = [f"u{j}" for j in range(40)]
    with live_serve(tiny_run, tmp_path, "--workers", "2") as server:

        def decide(user: str) -> list[int]:
            base = f"{server.base}/v1/users/{user}"
            grant = {"purposes": [1, 5, 6], "policy_version": "v1", "source": "test"}
            return [
                _post(f"{base}/consent/grant", grant, key),
                _post(f"{base}/consent/withdraw", {"purposes": [6], "source": "test"}, key),
                _post(f"{base}/objection", {"source": "test"}, key),
            ]

        with ThreadPoolExecutor(THREADS) as pool:
            codes = [c for chunk in pool.map(decide, users) for c in chunk]
        log = server.log.read_text()
    assert codes == [200] * (3 * len(users))
    out = subprocess.run(
        [str(FEDPERS), "serve", "verify-ledger", "--run", str(tiny_run), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"] is True, out.stdout + out.stderr
    assert report["chains"] == {"shop-a": 3 * len(users)}
    conn = sqlite3.connect(tiny_run / "api.db")
    seqs = [
        r[0]
        for r in conn.execute("SELECT seq FROM consent_ledger WHERE tenant = 'shop-a' ORDER BY seq")
    ]
    assert seqs == list(range(1, 3 * len(users) + 1))
    assert "Traceback" not in log
