"""Faults of a real Deployment Engine federation (issue 13, item 5).

Real ``flower-superlink``, ``flower-supernode`` and ``flwr run`` processes on 127.0.0.1,
TLS and SuperNode authentication on, started through :func:`processes` (whose clean-up
runs even when a test fails); afterwards no process may carry the test's folder in its
environment.

- One SuperNode is killed (``SIGKILL`` of its whole session) after the first round: the
  later rounds finish with the other nodes' devices and the run completes.
- The SuperLink (and the ServerApp under it) is killed after the first round and started
  again; ``flwr run`` with ``resume = true`` continues from the checkpoint, and the final
  model and epsilon equal those of an uninterrupted run of the same configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from leftover_processes import on_free_ports, stop_leftovers

from fedpers.privacy.errors import StoreError
from fedpers.server.checkpoint import load_checkpoint
from fedpers.server.rundb import RunDB
from fedpers.simulation.deploy.launcher import ProcessGroup, processes, wait_listening
from fedpers.simulation.deploy.plan import (
    DeploymentPlan,
    deployment_commands,
    prepare_deployment,
)
from fedpers.simulation.federation.run import SimulateOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 3


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """The test's folder; afterwards, kills and reports any process still using it."""
    yield tmp_path
    stop_leftovers(tmp_path, ignore_zombies=True)


def _plan(run_dir: Path, log: Path, **kw: Any) -> DeploymentPlan:
    fields: dict[str, Any] = {
        "rounds": ROUNDS,
        "recipe": "none",
        "dim": 8,
        "num_nodes": 2,
        "dp": "user",
        "noise_multiplier": 1.0,
        "clip": 0.5,
        **kw,
    }
    return on_free_ports(prepare_deployment(SimulateOptions(dataset=str(log), **fields), run_dir))


def _rounds(plan: DeploymentPlan) -> list[dict[str, Any]]:
    """The run's rounds so far ([] while the ServerApp still creates the database)."""
    if not plan.directory.run_db.is_file():
        return []
    try:
        with RunDB.open(plan.root) as db:
            return db.rounds()
    except StoreError:  # locked while the ServerApp migrates it
        return []


def _finished(plan: DeploymentPlan) -> bool:
    if not plan.directory.run_db.is_file():
        return False
    try:
        with RunDB.open(plan.root) as db:
            return "final_metrics" in db.read_privacy()
    except StoreError:
        return False


def _wait(predicate: Any, seconds: float, what: str, group: ProcessGroup) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what} not within {seconds:.0f} s; superlink: {group.log_tail('superlink')}"
            )
        time.sleep(0.3)


def _start(group: ProcessGroup, plan: DeploymentPlan, *, nodes: bool = True) -> None:
    commands = deployment_commands(plan, full_paths=True)
    group.start("superlink", commands.superlink)
    wait_listening(group, "superlink", plan.port, timeout=60)
    for i, register in enumerate(commands.register):
        group.call(f"register-{i}", register)
    if nodes:
        for i, supernode in enumerate(commands.supernodes):
            group.start(f"supernode-{i}", supernode)


def _submit(group: ProcessGroup, plan: DeploymentPlan, *, resume: bool = False) -> None:
    command = deployment_commands(plan, full_paths=True).run
    if resume:
        argv = list(command.argv)
        at = argv.index("--run-config") + 1
        argv[at] = f"{argv[at]} resume=true"
        command = replace(command, argv=argv)
    started = json.loads(group.call("flwr run", command))
    assert started.get("success"), started


def _kill_session(proc: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _completed(plan: DeploymentPlan) -> int:
    return sum(1 for r in _rounds(plan) if r["status"] == "completed")


def test_a_killed_supernode_leaves_the_round_to_the_others(folder: Path, tiny_log: Path) -> None:
    # a healthy round takes about 30 s here (a ClientApp process per message); the killed
    # node's reply never comes, so its round ends at the timeout with the others' updates
    plan = _plan(folder / "run", tiny_log, rounds=2, num_nodes=3, round_timeout=100.0)
    with processes(folder / "logs") as group:
        _start(group, plan)
        _submit(group, plan)
        _wait(lambda: _completed(plan) >= 1, 240, "round 1", group)
        victim = group.started.pop("supernode-2")
        _kill_session(victim)
        _wait(lambda: _finished(plan), 300, "the end of the run", group)
    rounds = _rounds(plan)
    assert [r["round"] for r in rounds] == [1, 2]
    with RunDB.open(plan.root) as db:
        counts = [sum(1 for p in db.participants(r) if p["status"] == "accepted") for r in (1, 2)]
    # the later rounds finished without the killed node's devices, or say they were skipped
    for r, accepted in zip(rounds[1:], counts[1:], strict=True):
        assert r["status"] == "completed" and 0 < accepted < counts[0], (r, counts)
    assert load_checkpoint(plan.root).round == 2


def _run_uninterrupted(folder: Path, log: Path) -> tuple[list[np.ndarray], float]:
    plan = _plan(folder / "reference", log)
    with processes(folder / "reference-logs") as group:
        _start(group, plan)
        _submit(group, plan)
        _wait(lambda: _finished(plan), 300, "the reference run", group)
    with RunDB.open(plan.root) as db:
        epsilon = float(db.read_privacy()["epsilon"])
    return load_checkpoint(plan.root).arrays, epsilon


def test_a_restarted_superlink_resumes_to_the_same_model(folder: Path, tiny_log: Path) -> None:
    plan = _plan(folder / "run", tiny_log)
    with processes(folder / "logs") as group:
        _start(group, plan)
        _submit(group, plan)
        _wait(lambda: _completed(plan) >= 1, 240, "round 1", group)
        _kill_session(group.started.pop("superlink"))  # the ServerApp runs in its session
        at_kill = load_checkpoint(plan.root).round
        assert at_kill < ROUNDS, "the run finished before the SuperLink was killed"
        # a SuperLink without a database forgets the nodes' registration: they restart too
        for name in [n for n in group.started if n.startswith("supernode-")]:
            _kill_session(group.started.pop(name))
        _start(group, plan)
        _submit(group, plan, resume=True)
        _wait(
            lambda: load_checkpoint(plan.root).round == ROUNDS and _finished(plan),
            300,
            "the resumed run",
            group,
        )
    assert plan.directory.checkpoint.is_file()
    with RunDB.open(plan.root) as db:
        epsilon = float(db.read_privacy()["epsilon"])
        assert [r["round"] for r in db.rounds()] == list(range(1, ROUNDS + 1))
    resumed = load_checkpoint(plan.root).arrays
    reference, reference_epsilon = _run_uninterrupted(folder, tiny_log)
    assert epsilon == pytest.approx(reference_epsilon, rel=1e-12)
    for a, b in zip(resumed, reference, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
