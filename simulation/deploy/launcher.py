"""Run a prepared deployment on this machine: real SuperLink, SuperNodes and ``flwr run``.

:func:`run_local` starts, on ``127.0.0.1`` and on ports chosen free at start,

1. ``flower-superlink`` (TLS and SuperNode authentication as prepared); under it Flower
   starts a SuperExec, which starts the ServerApp process (``fedpers.server.app:app``),
   which spawns the key holder with ``--secure-agg he``;
2. ``flwr supernode register`` for each SuperNode's public key (with authentication);
3. one ``flower-supernode`` per node (each starts its own SuperExec and ClientApp
   processes);
4. ``flwr run`` of the Flower app with ``config = RUN_DIR/config.json``,

then polls ``flwr ls`` until the run has finished and reads the result from the run
database. Every process it started, and every process those started (found by an
environment marker every child inherits), is stopped when the run ends, fails, times
out or is interrupted (Ctrl-C): SIGTERM, then SIGKILL after a grace period. Logs go to
``RUN_DIR/logs/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from fedpers.privacy.errors import ConfigError, FedpersError, StoreError
from fedpers.server.app import SECAGG_SETUP_KEY
from fedpers.server.rundb import RunDB
from fedpers.simulation.deploy.plan import (
    Command,
    DeploymentPlan,
    deployment_commands,
    free_port,
    load_plan,
    write_flower_config,
)

__all__ = ["MARKER", "DeploymentError", "ProcessGroup", "processes", "run_local", "wait_listening"]

MARKER = "FEDPERS_DEPLOYMENT_ID"
"""Environment variable every started process (and its children) carries."""
_LOOPBACK = ("127.0.0.1", "localhost")
_LS_EVERY = 10.0
"""Seconds between ``flwr ls`` status polls while the run database shows no end yet."""
_METRICS = ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")


class DeploymentError(FedpersError):
    """A process of a local deployment failed; the message names it and its log."""


@dataclass
class ProcessGroup:
    """The processes of one local deployment, stopped together.

    Attributes:
        log_dir: where each process writes ``<name>.log`` (stdout and stderr).
        marker: the value of :data:`MARKER` in every process's environment.
        started: name -> process, in start order.
    """

    log_dir: Path
    marker: str = field(default_factory=lambda: secrets.token_hex(8))
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[TextIO] = field(default_factory=list)

    def env(self, command: Command) -> dict[str, str]:
        """The environment of ``command``: ours, its own, the marker, this venv first on PATH."""
        env = {**os.environ, **command.env, MARKER: self.marker}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, name: str, command: Command) -> subprocess.Popen[bytes]:
        """Start ``command`` in its own session, logging to ``log_dir/<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("w")
        self._logs.append(log)
        proc = subprocess.Popen(
            command.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(command),
            start_new_session=True,
        )
        self.started[name] = proc
        return proc

    def call(self, name: str, command: Command, timeout: float = 120.0) -> str:
        """Run a short command to completion and return its stdout.

        Raises:
            DeploymentError: it failed or timed out (with the end of its output).
        """
        try:
            done = subprocess.run(
                command.argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env(command),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"{name} did not finish within {timeout:.0f} s") from exc
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-1500:]
            raise DeploymentError(f"{name} failed (exit {done.returncode}): {tail}")
        return done.stdout

    def check_alive(self) -> None:
        """Raise if a started process has exited.

        Raises:
            DeploymentError: naming the process and the end of its log.
        """
        for name, proc in self.started.items():
            code = proc.poll()
            if code is not None:
                raise DeploymentError(
                    f"{name} exited with code {code}: {self.log_tail(name)} "
                    f"(log: {self.log_dir / f'{name}.log'})"
                )

    def log_tail(self, name: str, chars: int = 800) -> str:
        """The last ``chars`` characters of a process's log, on one line."""
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(line.strip() for line in text[-chars:].splitlines() if line.strip())

    def descendants(self) -> list[int]:
        """Ids of live processes carrying this group's marker (Linux ``/proc``; else [])."""
        needle = f"{MARKER}={self.marker}".encode()
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            pid = int(entry.name)
            if pid == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(pid)
        return found

    def stop(self, grace: float = 5.0) -> None:
        """Stop every started process and every process carrying the marker."""
        for proc in reversed(list(self.started.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.started.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._kill_marked(grace)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def _kill_marked(self, grace: float) -> None:
        """SIGTERM, then SIGKILL, the processes the started ones left behind."""
        left = self.descendants()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.descendants()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def processes(log_dir: Path) -> Iterator[ProcessGroup]:
    """A :class:`ProcessGroup` stopped on exit, on error and on SIGTERM/SIGINT.

    Both signals are handled explicitly (as :class:`KeyboardInterrupt`), also SIGINT:
    a process started in the background by a non-interactive shell inherits SIGINT
    *ignored*, and Python then installs no Ctrl-C handler of its own, so the deployment
    would run on and keep its processes.
    """
    group = ProcessGroup(log_dir)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled} if main else {}
    try:
        yield group
    finally:
        group.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_listening(group: ProcessGroup, name: str, port: int, timeout: float) -> None:
    """Wait until ``127.0.0.1:port`` accepts connections (``name`` must stay alive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group.check_alive()
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DeploymentError(f"{name} is not listening on 127.0.0.1:{port} after {timeout:.0f} s")


def _json_of(stdout: str, what: str) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` command printed."""
    start = stdout.find("{")
    try:
        data = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise DeploymentError(f"{what} printed no JSON object: {stdout.strip()[-500:]}")
    return data


def _run_status(group: ProcessGroup, plan: DeploymentPlan, run_id: str) -> tuple[str, str]:
    """``(status, details)`` of a run, from ``flwr ls --run-id``."""
    ls = Command(
        ["flwr", "ls", "--run-id", run_id, "fedpers", "--format", "json"],
        {"FLWR_HOME": str(plan.flwr_home("cli"))},
    )
    data = _json_of(group.call("flwr ls", ls), "flwr ls")
    runs = data.get("runs") or [{}]
    return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))


def _result(plan: DeploymentPlan, run_id: str, seconds: float) -> dict[str, Any]:
    """The finished run's figures from its run database."""
    if not plan.directory.run_db.exists():
        raise StoreError(f"{plan.run_dir}: the run finished without a run database")
    with RunDB.open(plan.root) as db:
        privacy = db.read_privacy()
        rounds = db.rounds()
    metrics = privacy.get("final_metrics") or {}
    setup = privacy.get(SECAGG_SETUP_KEY) or {}
    return {
        **{k: metrics.get(k) for k in _METRICS},
        "epsilon": privacy.get("epsilon"),
        "delta": privacy.get("delta"),
        "rounds": sum(1 for r in rounds if r["status"] == "completed"),
        "round_seconds": [r["wall_seconds"] for r in rounds],
        "stopped_reason": privacy.get("stopped_reason"),
        "secure_agg": plan.secure_agg,
        "scheme": setup.get("scheme", "plaintext"),
        "public_context_is_private": setup.get("public_context_is_private"),
        "tls": plan.tls,
        "supernode_auth": plan.auth,
        "supernodes": len(plan.nodes),
        "flower_run_id": run_id,
        "seconds": seconds,
        "run_dir": plan.run_dir,
    }


def _ran_to_the_end(plan: DeploymentPlan) -> bool:
    """Whether the ServerApp wrote its final entry to the run database (a cheap read)."""
    try:
        with RunDB.open_readonly(plan.directory.root) as db:
            return db.finished()
    except StoreError:  # not created yet, or being created
        return False


def _wait_finished(
    group: ProcessGroup,
    plan: DeploymentPlan,
    run_id: str,
    timeout: float,
    poll_seconds: float,
    notify: Any,
) -> tuple[str, str]:
    """Wait until the run's status is ``finished:*``; return it and its details.

    ``flwr ls`` (a CLI process, about a second of CPU) is asked every
    :data:`_LS_EVERY` seconds, and at once when the run database shows the ServerApp
    has written its final entry; in between only the run database is read, so that the
    polling does not take CPU from the run it waits for.
    """
    status, details = "", ""
    deadline = time.monotonic() + timeout
    last_ls = time.monotonic()
    while True:
        if time.monotonic() > deadline:
            raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s")
        group.check_alive()
        time.sleep(poll_seconds)
        if not _ran_to_the_end(plan) and time.monotonic() - last_ls < _LS_EVERY:
            continue
        last_ls = time.monotonic()
        new, details = _run_status(group, plan, run_id)
        if new != status:
            notify(f"run {run_id}: {new}")
        status = new
        if status.startswith("finished"):
            return status, details


def run_local(
    run_dir: Path | str,
    *,
    timeout: float = 1800.0,
    poll_seconds: float = 0.5,
    on_status: Any = None,
) -> dict[str, Any]:
    """Start the prepared federation in ``run_dir`` on this machine and wait for it.

    Args:
        run_dir: a folder written by ``fedpers deploy prepare``.
        timeout: seconds the whole run may take.
        poll_seconds: interval of the run database checks (see :func:`_wait_finished`).
        on_status: called with each new status line (progress for the CLI).

    Returns:
        The run's figures (metrics, rounds, per-round wall seconds, scheme, wall time).

    Raises:
        ConfigError: not a prepared run directory, one that already ran, or a plan for
            another host than this machine's loopback.
        DeploymentError: a process failed, the run failed or did not finish in time.
    """
    plan = load_plan(run_dir)
    if plan.host not in _LOOPBACK:
        raise ConfigError(
            f"{plan.run_dir} was prepared for SuperLink host {plan.host}; `fedpers deploy local` "
            "runs on 127.0.0.1 only (prepare with the default --host)"
        )
    if plan.directory.run_db.exists():
        raise ConfigError(f"{plan.run_dir} already holds a run; prepare a new run directory")
    plan = replace(plan, port=free_port(), node_ports=[free_port() for _ in plan.nodes])
    write_flower_config(plan)
    commands = deployment_commands(plan, full_paths=True)
    notify = on_status or (lambda _line: None)
    start = time.perf_counter()
    with processes(plan.directory.logs) as group:
        group.start("superlink", commands.superlink)
        wait_listening(group, "superlink", plan.port, timeout=60)
        notify(f"SuperLink on {plan.host}:{plan.port} (TLS {'on' if plan.tls else 'off'})")
        for i, register in enumerate(commands.register):
            group.call(f"flwr supernode register (node {i})", register)
        for i, supernode in enumerate(commands.supernodes):
            group.start(f"supernode-{i}", supernode)
        notify(f"{len(commands.supernodes)} SuperNodes started")
        started = _json_of(group.call("flwr run", commands.run), "flwr run")
        run_id = str(started.get("run-id") or "")
        if not started.get("success") or not run_id:
            raise DeploymentError(f"flwr run did not start a run: {started}")
        notify(f"flwr run: run {run_id} submitted")
        status, details = _wait_finished(group, plan, run_id, timeout, poll_seconds, notify)
        if status != "finished:completed":
            raise DeploymentError(
                f"run {run_id} {status}: {details} (SuperLink log: {group.log_dir}/superlink.log)"
            )
    return _result(plan, run_id, time.perf_counter() - start)
