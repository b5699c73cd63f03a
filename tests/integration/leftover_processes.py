"""What the tests that start real processes share: finding them in ``/proc``, stopping leftovers.

Every process of a real Deployment Engine run (the SuperLink, the SuperNodes, their
SuperExecs, the ServerApp and ClientApp processes and the key holder) inherits the run's
``FLWR_HOME`` folder in its environment, so the processes a test started are the ones
whose ``/proc/<pid>/environ`` names the test's folder. After a test none may be left.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from fedpers.simulation.deploy.plan import DeploymentPlan, free_port, write_flower_config

__all__ = [
    "alive",
    "on_free_ports",
    "proc_files",
    "process_state",
    "processes_of",
    "stop_leftovers",
]


def proc_files(*names: str) -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, contents)`` of every process: its ``/proc/<pid>/<name>`` files, in order.

    A process whose files cannot be read (it ended, or belongs to another user) is left out.
    """
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            contents = [(entry / name).read_bytes() for name in names]
        except OSError:
            continue
        yield int(entry.name), contents


def processes_of(folder: Path) -> list[int]:
    """Processes, zombies included, whose environment names ``folder`` (this one excluded)."""
    needle = str(folder).encode()
    return [
        pid for pid, (environ,) in proc_files("environ") if pid != os.getpid() and needle in environ
    ]


def process_state(stat: bytes) -> str:
    """The state letter in a ``/proc/<pid>/stat`` line (``R``, ``S``, ``Z`` for a zombie, ...)."""
    return stat.rsplit(b")", 1)[1].split()[0].decode()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return process_state(stat) != "Z"


def stop_leftovers(folder: Path, *, ignore_zombies: bool = False) -> None:
    """Kill every process still using ``folder``, then fail the test if there was any.

    Args:
        folder: the test's folder (or the run's root).
        ignore_zombies: leave out processes that have exited but are not yet reaped.
    """
    left = processes_of(folder)
    if ignore_zombies:
        left = [pid for pid in left if alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running: {left}"


def on_free_ports(plan: DeploymentPlan) -> DeploymentPlan:
    """``plan`` with a free SuperLink port and free SuperNode ports, its Flower config rewritten."""
    plan = replace(plan, port=free_port(), node_ports=[free_port() for _ in plan.nodes])
    write_flower_config(plan)
    return plan
