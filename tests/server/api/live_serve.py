"""A real ``fedpers serve`` process on a free 127.0.0.1 port, always stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

FEDPERS = Path(sys.executable).with_name("fedpers")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_key(run_dir: Path, tenant: str, *scopes: str, rate: float | None = None) -> str:
    """A key from ``fedpers serve keys create`` (printed once on stdout)."""
    args = [str(FEDPERS), "serve", "keys", "create", "--run", str(run_dir), "--tenant", tenant]
    for scope in scopes or ("serve",):
        args += ["--scope", scope]
    if rate is not None:
        args += ["--rate", str(rate)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


@dataclass
class LiveServer:
    """A running server: its base URL, process and stderr log."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def live_serve(
    run_dir: Path, log_dir: Path, *extra: str, timeout: float = 60.0
) -> Iterator[LiveServer]:
    """Start ``fedpers serve --run RUN_DIR --port FREE EXTRA...``, wait for /readyz, stop it."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    args = [str(FEDPERS), "serve", "--run", str(run_dir), "--port", str(port), *extra]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fedpers serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fedpers serve not ready after {timeout} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield LiveServer(base, proc, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
