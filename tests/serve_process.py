"""One real ``fedpers serve`` process on a free loopback port, for tests in any folder.

``tests/`` is on ``sys.path`` (pytest puts the root conftest's folder there), so both
``tests/server/api/live_serve.py`` and ``tests/integration/web_harness.py`` import this.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FEDPERS = Path(sys.executable).with_name("fedpers")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _started(log: Path) -> int:
    """How many uvicorn worker processes have completed their start-up, from the log."""
    return log.read_text(errors="replace").count("Application startup complete")


@contextmanager
def serve_process(
    run_dir: Path, log_for: Callable[[int], Path], *extra: str, timeout: float = 60.0
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """Start ``fedpers serve --run RUN_DIR --port FREE EXTRA...``, wait until ready, stop it.

    Ready means /readyz answers 200 and, with ``--workers N``, every one of the N worker
    processes has finished its start-up (one worker can answer /readyz while another is
    still importing on a busy machine). Yields the base URL, the process and its log
    (``log_for(port)``); the process group is stopped on exit (SIGINT, then SIGKILL),
    whatever happened.
    """
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    port = free_port()
    log = log_for(port)
    args = [str(FEDPERS), "serve", "--run", str(run_dir), "--port", str(port), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            args, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fedpers serve exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200 and _started(log) >= workers:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fedpers serve not ready after {timeout} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, proc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
