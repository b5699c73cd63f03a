"""Flower's Deployment Engine for real: flower-superlink, flower-supernode and flwr run.

Every test starts real processes on 127.0.0.1 (TLS and SuperNode authentication on, as
`fedpers deploy prepare` sets them up) through :func:`run_local` or a
:class:`ProcessGroup`, whose clean-up runs even when the test fails. After each test no
process may be left that carries one of the run's ``FLWR_HOME`` folders in its
environment (the SuperLink, the SuperNodes, their SuperExecs, the ServerApp and
ClientApp processes and the key holder all inherit it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from leftover_processes import alive, on_free_ports, processes_of, stop_leftovers
from local_grid import LocalGrid

from fedpers.client.app import ClientSettings, make_client_app
from fedpers.server.app import SECAGG_SETUP_KEY, initial_arrays, run_federation
from fedpers.server.checkpoint import load_checkpoint
from fedpers.server.config import FederationConfig
from fedpers.server.rundb import RunDB
from fedpers.simulation.deploy.launcher import (
    DeploymentError,
    processes,
    run_local,
    wait_listening,
)
from fedpers.simulation.deploy.plan import (
    DeploymentPlan,
    deployment_commands,
    prepare_deployment,
)
from fedpers.simulation.federation.run import SimulateOptions

pytestmark = pytest.mark.integration


def _prepare(run_dir: Path, log: Path, **kw: Any) -> DeploymentPlan:
    fields: dict[str, Any] = {"rounds": 2, "recipe": "none", "dim": 8, "num_nodes": 2, **kw}
    options = SimulateOptions(dataset=str(log), **fields)
    return prepare_deployment(options, run_dir)


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[Path]:
    """The test's folder; afterwards, kills and reports any process still using it."""
    yield tmp_path
    stop_leftovers(tmp_path)


@pytest.fixture(scope="module")
def he_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_log: Path
) -> Iterator[tuple[DeploymentPlan, dict[str, Any], Path]]:
    """A 2-round CKKS deployment (2 SuperNodes, node sums) and a copy of its fresh devices."""
    root = tmp_path_factory.mktemp("he")
    plan = _prepare(root / "run", tiny_log, secure_agg="he", reply="sum")
    fresh = root / "fresh-devices"
    shutil.copytree(plan.root / "devices", fresh)
    try:
        result = run_local(plan.run_dir, timeout=300)
        yield plan, result, fresh
    finally:
        stop_leftovers(root)


@pytest.mark.slow  # ~50 s: Flower polls every 3 s and starts a ClientApp process per message
def test_he_deployment_completes_with_ckks_and_key_custody(
    he_run: tuple[DeploymentPlan, dict[str, Any], Path],
) -> None:
    plan, result, _ = he_run
    assert result["rounds"] == 2 and result["scheme"] == "ckks"
    assert result["tls"] and result["supernode_auth"] and result["supernodes"] == 2
    with RunDB.open(plan.root) as db:
        privacy = db.read_privacy()
        egress = list(db.egress())
        rounds = db.rounds()
    assert [r["status"] for r in rounds] == ["completed", "completed"]
    assert privacy["secure_aggregation"] == "he"
    setup = privacy[SECAGG_SETUP_KEY]
    assert setup["scheme"] == "ckks"
    # checked with is_private() on the context the ServerApp process loaded
    assert setup["public_context_is_private"] is False
    assert "secret" in setup["key_custody"]["key_holder"]
    assert "public" in setup["key_custody"]["coordinator"]
    assert setup["keys_dir"] == str(plan.root / "keys")
    coordinator, holder = setup["coordinator_pid"], setup["key_holder_pid"]
    assert holder != coordinator and os.getpid() not in (holder, coordinator)
    assert not alive(holder) and not alive(coordinator)  # both gone with the run
    updates = [e for e in egress if e["record"].startswith("update.")]
    assert len(updates) == 2 * 2  # one encrypted node sum per SuperNode and round
    assert {e["dtype"] for e in updates} == {"uint8"}
    assert setup["devices_encrypt"] == "node_sum_once"
    # the SuperNodes were given the public context only
    assert all(n["secagg-context"].endswith("keys/public.ctx") for n in plan.nodes)
    superlink_log = (plan.root / "logs" / "superlink.log").read_text()
    assert "https://127.0.0.1" in superlink_log and "RegisterNode" in superlink_log


@pytest.mark.slow  # shares the deployment above
def test_he_deployment_equals_the_in_process_plaintext_run(
    he_run: tuple[DeploymentPlan, dict[str, Any], Path], tmp_path: Path
) -> None:
    plan, result, fresh = he_run
    config = FederationConfig.from_dict(json.loads(plan.config_path.read_text()))
    devices = tmp_path / "devices"
    shutil.copytree(fresh, devices)
    ref = replace(
        config, run_dir=str(tmp_path), devices_dir=str(devices), secure_agg="none", secagg_keys=""
    ).resolve_privacy()
    nodes = [{**n, "devices-dir": str(devices)} for n in plan.nodes]
    for node in nodes:
        node.pop("secagg-context")
    app = make_client_app(ClientSettings(devices_dir=str(devices), mode=config.mode))
    plain = run_federation(LocalGrid(app, len(nodes), node_configs=nodes, seed=1), ref)
    deployed = load_checkpoint(plan.root).arrays
    assert plain.rounds_completed == 2
    for a, b in zip(deployed, plain.arrays, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)  # CKKS error only
    assert not np.allclose(deployed[0], initial_arrays(config)[1][0]), "the model never moved"
    assert result["hr10_sampled"] == pytest.approx(plain.metrics["hr10_sampled"], abs=1e-9)


def test_failed_run_reports_the_serverapp_error_and_stops_everything(
    no_leftovers: Path, tiny_log: Path
) -> None:
    plan = _prepare(no_leftovers / "run", tiny_log, rounds=0)
    broken = json.loads(plan.config_path.read_text())
    broken.update(secure_agg="he", secagg_keys="")  # he without a key set
    plan.config_path.write_text(json.dumps(broken))
    start = time.monotonic()
    with pytest.raises(DeploymentError, match=r"finished:failed.*secagg_keys"):
        run_local(plan.run_dir, timeout=120)
    assert time.monotonic() - start < 90


def test_unregistered_or_unverified_supernodes_are_refused(
    no_leftovers: Path, tiny_log: Path
) -> None:
    plan = on_free_ports(_prepare(no_leftovers / "run", tiny_log, rounds=0))
    other = _prepare(no_leftovers / "other", tiny_log, rounds=0)  # another CA, other keys
    commands = deployment_commands(plan, full_paths=True)
    foreign = deployment_commands(replace(other, port=plan.port), full_paths=True)
    with processes(no_leftovers / "logs") as group:
        group.start("superlink", commands.superlink)
        wait_listening(group, "superlink", plan.port, timeout=60)
        unregistered = group.start("unregistered", commands.supernodes[0])
        group.call("register", commands.register[1])
        wrong_ca = group.start("wrong-ca", foreign.supernodes[1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and None in (unregistered.poll(), wrong_ca.poll()):
            time.sleep(0.2)
        assert unregistered.poll() not in (None, 0)
        assert (
            "No SuperNode found with the given public key"
            in (no_leftovers / "logs" / "superlink.log").read_text()
        )
        assert wrong_ca.poll() not in (None, 0)
        assert "certificate verify failed" in group.log_tail("wrong-ca", 4000)


def test_ctrl_c_stops_every_process(no_leftovers: Path, tiny_log: Path) -> None:
    # enough rounds that the run cannot finish between "submitted" and the Ctrl-C
    plan = _prepare(no_leftovers / "run", tiny_log, rounds=50)
    err = no_leftovers / "stderr.txt"
    fedpers = str(Path(sys.executable).parent / "fedpers")
    with err.open("w") as sink:
        proc = subprocess.Popen(
            [fedpers, "deploy", "local", plan.run_dir, "--json"],
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while "submitted" not in err.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.2)
            assert processes_of(plan.root), "nothing was running"
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    assert out == "" and "every process of the deployment was stopped" in err.read_text()
