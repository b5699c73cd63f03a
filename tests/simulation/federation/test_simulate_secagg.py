"""``fedpers simulate --secure-agg he`` end to end (subprocesses; Ray for the slow test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedpers.server.app import SECAGG_SETUP_KEY
from fedpers.server.rundb import RunDB
from fedpers.simulation.data import SyntheticConfig, generate_synthetic, write_interaction_log


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = generate_synthetic(SyntheticConfig(n_users=24, n_items=40, events_per_user=8, seed=2))
    return write_interaction_log(data, tmp_path_factory.mktemp("data") / "tiny.csv")


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fedpers.simulation.cli.simulate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_keys_folder_that_is_not_a_key_set_is_a_one_line_error(
    tmp_path: Path, tiny_log: Path
) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not keys")
    proc = _run(
        "--dataset", str(tiny_log), "--secure-agg", "he", "--keys", str(junk),
        "--out", str(tmp_path / "r"), "--json",
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a fedpers key set" in lines[0]
    assert proc.stdout == ""


@pytest.mark.slow
def test_he_on_ray_matches_plaintext_within_0_005(tmp_path: Path, tiny_log: Path) -> None:
    results = {}
    for scheme in ("none", "he"):
        out = tmp_path / scheme
        proc = _run(
            "--dataset", str(tiny_log), "--rounds", "2", "--out", str(out), "--json",
            "--reply", "sum", "--secure-agg", scheme,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[scheme] = json.loads(proc.stdout)
    assert results["he"]["secure_agg"] == "he"
    assert results["he"]["rounds"] == results["none"]["rounds"] == 2
    assert abs(results["he"]["hr10_sampled"] - results["none"]["hr10_sampled"]) <= 0.005
    keys = tmp_path / "he" / "keys"
    assert (keys / "secret.ctx").stat().st_mode & 0o077 == 0
    with RunDB.open(tmp_path / "he") as db:
        setup = db.read_privacy()[SECAGG_SETUP_KEY]
    assert setup["public_context_is_private"] is False
    assert setup["devices_encrypt"] == "node_sum_once"
