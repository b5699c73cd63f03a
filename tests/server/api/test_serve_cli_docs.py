"""The curl session of ``docs/api.md`` runs against a real ``fedpers serve``.

Each ``$ curl ...`` command of the page's "A curl session" block is run with bash against
a live server (its ``127.0.0.1:8080`` replaced by the test server's address, ``$KEY`` a
real key), on a run with as many items as ML-100K. The answer must carry the same
consent-relevant fields as the page shows (``personalised``, ``basis``, ``reason``,
``granted``, ``erased``, problem ``status``/``detail``, ...); item titles and scores
depend on the model and are not compared.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_serve import create_key, live_serve

from fedpers.client.global_model import GlobalModel
from fedpers.client.model import ModelConfig
from fedpers.server.checkpoint import sha256_file
from fedpers.server.rundb import RunDB

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parents[3] / "docs" / "api.md"
COMPARED = (
    "personalised", "basis", "reason", "granted", "objection", "erased", "already_erased",
    "consent_rows", "ledger_entries_shredded", "status", "detail", "policy_version",
)  # fmt: skip
_PAIR = re.compile(r'"(' + "|".join(COMPARED) + r')":(true|false|null|"[^"]*"|\[[^\]]*\]|\d+)')


def session(page: Path) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of the page's curl-session block."""
    text = page.read_text(encoding="utf-8").split("## A curl session", 1)[1]
    block = text.split("```console\n", 1)[1].split("\n```", 1)[0]
    pairs: list[tuple[str, str]] = []
    command: list[str] = []
    output: list[str] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            if command:
                pairs.append(("\n".join(command), "\n".join(output)))
            command, output = [line[2:]], []
        elif line.startswith((" ", "\t")) and not output:
            command.append(line)
        else:
            output.append(line)
    if command:
        pairs.append(("\n".join(command), "\n".join(output)))
    return pairs


def _ml100k_like_run(run_dir: Path, n_items: int = 1682, dim: int = 8) -> Path:
    rng = np.random.default_rng(0)
    ids = [str(i + 1) for i in range(n_items)]
    devices = run_dir / "devices"
    devices.mkdir(parents=True)
    np.savez(
        devices / "catalogue.npz",
        item_ids=np.asarray(ids, dtype=str),
        item_features=np.zeros((n_items, 0), dtype=np.float32),
        item_feature_names=np.asarray([], dtype=str),
        item_titles=np.asarray([f"Movie {i}" for i in ids], dtype=str),
    )
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n_items, dim=dim),
        [
            rng.normal(0, 0.3, (n_items, dim)).astype(np.float32),
            rng.normal(0, 0.3, n_items).astype(np.float32),
        ],
        ids,
        meta={"round": 5, "epsilon": 8.0, "delta": 1e-4},
    )
    path = model.save(run_dir / "models" / "round-0005.npz")
    with RunDB.open(run_dir) as db:
        db.write_config({"devices_dir": str(devices), "rounds": 5})
        db.write_privacy({"unit": "user", "mechanism": "gaussian", "accountant": "rdp",
                          "delta": 1e-4, "epsilon": 8.0})  # fmt: skip
        db.register_model(5, path, sha256_file(path), {})
    return run_dir


def test_the_page_has_a_curl_session() -> None:
    pairs = session(PAGE)
    assert len(pairs) >= 8
    joined = " ".join(c for c, _ in pairs)
    for route in ("consent/grant", "recommendations", "Sec-GPC: 1", "/export", "-X DELETE"):
        assert route in joined


def test_the_curl_session_of_the_api_page_runs(tmp_path: Path) -> None:
    run_dir = _ml100k_like_run(tmp_path / "run")
    key = create_key(run_dir, "shop-a")
    env = {**os.environ, "KEY": key, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with live_serve(run_dir, tmp_path) as server:
        address = server.base.removeprefix("http://")
        for command, expected in session(PAGE):
            out = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command.replace("127.0.0.1:8080", address)],
                capture_output=True, text=True, env=env, timeout=60,
            )  # fmt: skip
            assert out.returncode == 0, (command, out.stderr)
            wanted = _PAIR.findall(expected)
            assert wanted or not expected.strip().startswith("{"), command
            got = set(_PAIR.findall(out.stdout))
            missing = [p for p in wanted if p not in got]
            assert not missing, f"{command}\nexpected {missing}\ngot {out.stdout[:600]}"
