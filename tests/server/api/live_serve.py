"""A real ``fedpers serve`` process on a free 127.0.0.1 port, always stopped afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serve_process import FEDPERS, serve_process


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
    with serve_process(
        run_dir, lambda port: log_dir / f"serve-{port}.log", *extra, timeout=timeout
    ) as (base, proc, log):
        yield LiveServer(base, proc, log)
