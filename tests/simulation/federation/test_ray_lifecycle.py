"""The Ray guard: processes started under it die with a SIGKILLed driver (no Ray needed).

A driver process opens :func:`ray_guard` and starts a grandchild in its own session (as
Ray's raylet starts its agents: detached, ignoring SIGTERM); the test SIGKILLs the
driver and the grandchild must be gone within seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedpers.server.run_dir import RunDirectory
from fedpers.simulation.federation.ray_lifecycle import (
    OWNER_ENV,
    kill_stale,
    owned_processes,
    owner_alive,
    owner_tag,
)

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")

_DRIVER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from pathlib import Path
    from fedpers.simulation.federation.ray_lifecycle import ray_guard
    AGENT = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    with ray_guard(Path(sys.argv[1])):
        agent = subprocess.Popen([sys.executable, "-c", AGENT], start_new_session=True)
        Path(sys.argv[2]).write_text(str(agent.pid))
        time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _start_driver(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    pid_file = tmp_path / "agent.pid"
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, str(tmp_path), str(pid_file)])
    deadline = time.monotonic() + 30
    while not pid_file.is_file() or not pid_file.read_text():
        if time.monotonic() > deadline or driver.poll() is not None:
            driver.kill()
            pytest.fail("the driver did not start its agent")
        time.sleep(0.05)
    return driver, int(pid_file.read_text())


def test_sigkill_of_the_driver_kills_its_detached_agents(tmp_path: Path) -> None:
    driver, agent = _start_driver(tmp_path)
    try:
        assert RunDirectory(tmp_path).ray_owner.is_file()
        assert _alive(agent)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert _wait_gone(agent, 10.0), "the agent outlived the SIGKILLed driver"
    finally:
        _kill(driver.pid)
        _kill(agent)


def test_a_normal_exit_kills_what_is_left_and_removes_the_record(tmp_path: Path) -> None:
    from fedpers.simulation.federation.ray_lifecycle import ray_guard

    with ray_guard(tmp_path):
        agent = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
        )
        assert RunDirectory(tmp_path).ray_owner.is_file()
        assert owned_processes().get(agent.pid) == owner_tag()
    try:
        assert agent.wait(timeout=10) == -signal.SIGKILL
        assert not RunDirectory(tmp_path).ray_owner.exists()
        assert OWNER_ENV not in os.environ
    finally:
        _kill(agent.pid)


def test_the_next_start_kills_leftovers_of_a_dead_owner(tmp_path: Path) -> None:
    # an owner that has exited: a finished child's tag never matches a live process again
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = owner_tag(gone.pid)
    gone.wait()
    assert not owner_alive(tag)
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"],
        env={**os.environ, OWNER_ENV: tag},
        start_new_session=True,
    )
    mine = subprocess.Popen(  # owned by a live process (this one): must be kept
        [sys.executable, "-c", "import time; time.sleep(300)"],
        env={**os.environ, OWNER_ENV: owner_tag()},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while leftover.pid not in owned_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = kill_stale()
        assert leftover.pid in killed
        assert mine.pid not in killed
        assert leftover.wait(timeout=10) == -signal.SIGKILL
        assert mine.poll() is None
    finally:
        _kill(leftover.pid)
        _kill(mine.pid)
        mine.wait()
