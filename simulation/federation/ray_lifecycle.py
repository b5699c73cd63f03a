"""Leave no Ray process behind when ``fedpers simulate`` dies, even by ``SIGKILL``.

Ray's head processes die with the driver, but the agents the raylet starts
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) ignore ``SIGTERM`` and outlive a
killed driver as orphans of PID 1. :func:`ray_guard` marks every process started while
it is open with an *owner tag* (the environment variable :data:`OWNER_ENV`, inherited
by Ray's processes and everything they start), and starts a small watchdog in its own
session. When the driver dies the watchdog kills every process that carries the tag;
when the guard closes normally it kills whatever is left of it itself. Because the tag
names the owner (pid and start time), the next start also finds and kills the
leftovers of an earlier driver that died with its watchdog, and the run directory holds
a record (``RUN_DIR/ray_owner.json``,
:attr:`~fedpers.server.run_dir.RunDirectory.ray_owner`) of the owner while the federation runs.

Processes are read from ``/proc`` (Linux); elsewhere the guard only records the owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fedpers.server.run_dir import RunDirectory

__all__ = [
    "OWNER_ENV",
    "kill_owned",
    "kill_stale",
    "owned_processes",
    "owner_alive",
    "owner_tag",
    "ray_guard",
]

logger = logging.getLogger(__name__)

OWNER_ENV = "FEDPERS_RAY_OWNER"
"""Environment variable naming the ``fedpers simulate`` process that owns a Ray process."""

_PROC = Path("/proc")
_POLL_S = 0.5


def _start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or ``None`` when it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


def owner_tag(pid: int | None = None) -> str:
    """The owner tag of ``pid`` (default: this process): ``"<pid>:<start ticks>"``.

    The start time makes a tag unique even when the pid is reused later.
    """
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid) or 0}"


def owner_alive(tag: str) -> bool:
    """Whether the process a tag names still runs (same pid, same start time)."""
    try:
        pid_text, ticks_text = tag.split(":", 1)
        pid, ticks = int(pid_text), int(ticks_text)
    except ValueError:
        return False
    return _start_ticks(pid) == ticks


def _owner_of(pid: int) -> str | None:
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = OWNER_ENV.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def owned_processes() -> dict[int, str]:
    """Every live process (readable by this user) that carries an owner tag: ``{pid: tag}``."""
    found: dict[int, str] = {}
    if not _PROC.is_dir():
        return found
    me = os.getpid()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        tag = _owner_of(pid)
        if tag is not None and _start_ticks(pid) is not None:
            found[pid] = tag
    return found


def kill_owned(tag: str, *, exclude: int | None = None) -> list[int]:
    """``SIGKILL`` every live process tagged with ``tag`` (except ``exclude``).

    Returns:
        The pids signalled.
    """
    killed = []
    for pid, owner in owned_processes().items():
        if owner != tag or pid == exclude:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def kill_stale() -> list[int]:
    """``SIGKILL`` every tagged process whose owner is gone (an earlier run that died).

    Returns:
        The pids signalled.
    """
    killed = []
    dead = {tag for tag in set(owned_processes().values()) if not owner_alive(tag)}
    for tag in dead:
        killed.extend(kill_owned(tag))
    return killed


def _watch(tag: str) -> None:
    """The watchdog: wait for the owner to die, then kill what it left behind."""
    while owner_alive(tag):
        time.sleep(_POLL_S)
    kill_owned(tag)
    time.sleep(_POLL_S)  # a process forked while the first sweep ran
    kill_owned(tag)


def _write_record(run_dir: Path, tag: str, watchdog: int | None) -> Path:
    record = RunDirectory(run_dir).ray_owner
    payload = {"owner": tag, "owner_pid": int(tag.split(":")[0]), "watchdog_pid": watchdog}
    record.write_text(json.dumps(payload, indent=2) + "\n")
    return record


def _clean_earlier(run_dir: Path) -> None:
    killed = kill_stale()
    record = RunDirectory(run_dir).ray_owner
    if record.is_file():
        with contextlib.suppress(OSError, ValueError):
            earlier = json.loads(record.read_text()).get("owner", "")
            if not owner_alive(str(earlier)):
                record.unlink()
    if killed:
        logger.warning(
            "stopped %d Ray process(es) left behind by an earlier run that died", len(killed)
        )


@contextlib.contextmanager
def ray_guard(run_dir: Path) -> Iterator[None]:
    """Run a Ray session that leaves no process behind, however this process ends.

    On entry it kills leftovers of earlier runs whose driver died, tags this process's
    future children (:data:`OWNER_ENV`), records the owner in ``run_dir`` and starts the
    watchdog; on exit it kills every tagged process still alive, stops the watchdog and
    removes the record.

    Args:
        run_dir: the run directory (it must exist).

    Yields:
        Nothing; start Ray inside the block.
    """
    _clean_earlier(run_dir)
    tag = owner_tag()
    saved = os.environ.get(OWNER_ENV)
    watchdog: subprocess.Popen[bytes] | None = None
    if _PROC.is_dir():
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "fedpers.simulation.federation.ray_lifecycle", tag],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # survives a signal to the driver's process group
            env={k: v for k, v in os.environ.items() if k != OWNER_ENV},
        )
    record = _write_record(run_dir, tag, None if watchdog is None else watchdog.pid)
    os.environ[OWNER_ENV] = tag
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(OWNER_ENV, None)
        else:
            os.environ[OWNER_ENV] = saved
        kill_owned(tag, exclude=os.getpid())
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        with contextlib.suppress(OSError):
            record.unlink()


# The watchdog: python -m fedpers.simulation.federation.ray_lifecycle TAG
if __name__ == "__main__":
    _watch(sys.argv[1])
