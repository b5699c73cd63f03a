"""A SIGKILLed ``fedpers simulate`` leaves no Ray process behind (issue 13, item 6).

Before the Ray guard, ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` outlived a
killed driver as orphans of PID 1. The test runs a small federation from a CSV log,
SIGKILLs the command once its Ray session is up, and requires every process of that
session to be gone; then a second ``simulate`` starts after planting a leftover of a dead
owner, and must stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from leftover_processes import proc_files, process_state

from fedpers.simulation.federation.ray_lifecycle import OWNER_ENV, owner_tag

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc"),
]

FEDPERS = [str(Path(sys.executable).with_name("fedpers"))]


def _write_log(path: Path, users: int = 12, items: int = 40) -> None:
    rows = ["user,item,timestamp"]
    for u in range(users):
        for j in range(8):
            rows.append(f"u{u},i{(u * 3 + j * 5) % items},{u * 100 + j}")
    path.write_text("\n".join(rows) + "\n")


def _session_processes(session_marker: str) -> list[int]:
    """Live processes whose command line or environment names the Ray session's driver."""
    needle = session_marker.encode()
    found = []
    for pid, (stat, env, cmd) in proc_files("stat", "environ", "cmdline"):
        if process_state(stat) in ("Z", "X"):  # exited: a zombie or dead
            continue
        if needle in env or needle in cmd:
            found.append(pid)
    return found


def _agents(marker: str) -> bool:
    """Whether the raylet's agents (the processes the old code left orphaned) are up."""
    for pid in _session_processes(marker):
        try:
            if (Path("/proc") / str(pid) / "cmdline").read_bytes().startswith(b"ray::"):
                return True
        except OSError:
            continue
    return False


def _ray_children(pid: int) -> list[int]:
    """Processes whose command line names the Ray session started by ``pid``."""
    session = f"_{pid}/".encode()
    return [child for child, (cmd,) in proc_files("cmdline") if session in cmd and b"ray" in cmd]


def _wait(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.25)
    return False


def _simulate(log: Path, out: Path, rounds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *FEDPERS,
            "simulate",
            "--dataset",
            str(log),
            "--rounds",
            str(rounds),
            "--recipe",
            "none",
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_tree(marker: str) -> None:
    for pid in _session_processes(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_sigkill_of_simulate_leaves_no_ray_process(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    _write_log(log)
    proc = _simulate(log, tmp_path / "run", rounds=500)
    marker = f"{OWNER_ENV}={proc.pid}:"
    try:
        # the raylet's agents are up: the moment the old code left them orphaned
        assert _wait(lambda: _agents(marker), 180), "the Ray session did not start"
        os.kill(proc.pid, signal.SIGKILL)  # the command's process only, as `kill -9 PID`
        proc.wait()
        assert _wait(lambda: not _session_processes(marker), 20), (
            f"left behind: {_session_processes(marker)}"
        )
        assert _wait(lambda: not _ray_children(proc.pid), 20)
    finally:
        _kill_tree(marker)


def test_the_next_simulate_stops_an_earlier_runs_leftovers(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    _write_log(log)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner = owner_tag(gone.pid)
    gone.wait()
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, OWNER_ENV: dead_owner},
        start_new_session=True,
    )
    try:
        proc = _simulate(log, tmp_path / "run", rounds=1)
        assert proc.wait(timeout=300) == 0
        assert leftover.wait(timeout=10) == -signal.SIGKILL
    finally:
        leftover.kill()
        leftover.wait()
