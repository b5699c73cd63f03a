"""Benchmark helper: ``fedpers simulate`` in a child process, with its per-round wall times.

The round benchmarks (``bench_round_speed.py``, ``bench_secagg_round.py``) time whole
Flower simulations. Each runs in a fresh interpreter with one OpenMP thread, so that Ray,
torch and TenSEAL start as they would for a user, and the per-round wall times are read
back from the run database the child wrote.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpers.server.rundb import RunDB


@dataclass(frozen=True)
class ChildRun:
    """One finished ``fedpers simulate`` child.

    Attributes:
        result: the ``--json`` object it printed.
        round_walls: wall seconds of each round, from its run database.
        total_seconds: wall time of the whole child process.
    """

    result: dict[str, Any]
    round_walls: list[float]
    total_seconds: float

    @property
    def steady_round_seconds(self) -> float:
        """Median round after the first (which starts Ray actors and opens the stores)."""
        return statistics.median(self.round_walls[1:] or self.round_walls)


def run_simulate(args: list[str], out: Path, label: str) -> ChildRun:
    """Run ``fedpers simulate ARGS --out OUT --eval-devices 50 --json`` and read it back.

    Raises:
        RuntimeError: naming ``label`` and the end of the child's stderr when it fails.
    """
    cmd = [
        sys.executable, "-m", "fedpers.simulation.cli.simulate", *args,
        "--out", str(out), "--eval-devices", "50", "--json",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{label} run failed: {proc.stderr[-2000:]}")
    with RunDB.open(out) as db:
        walls = [float(r["wall_seconds"]) for r in db.rounds()]
    return ChildRun(result=json.loads(proc.stdout), round_walls=walls, total_seconds=total)
