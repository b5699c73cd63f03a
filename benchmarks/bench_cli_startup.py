"""Start-up time of the ``fedpers`` console script: ``--help`` and ``client recommend`` < 1 s.

Each command runs ``--repeats`` times as a fresh process (the installed console script,
as a user runs it); the figure is the median wall time. ``client recommend`` ranks a
1,682-item model (ML-100K's size) for a store with one event, the on-device path.
``import torch`` alone is timed as the reference for what lazy imports save.

Usage::

    python benchmarks/bench_cli_startup.py
    python benchmarks/bench_cli_startup.py --json --repeats 11

Exit status 1 when ``fedpers --help`` or ``fedpers client recommend`` takes 1 s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.client.consent import ConsentManager
from fedpers.client.global_model import GlobalModel
from fedpers.client.model import ModelConfig
from fedpers.client.store import Event, EventStore

FEDPERS = str(Path(sys.executable).parent / "fedpers")
TARGET_SECONDS = 1.0


def _median_seconds(cmd: list[str], repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    return statistics.median(walls)


def _device(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n, d = 1682, 64
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n, dim=d),
        [rng.normal(0, 0.1, (n, d)).astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32)],
        [str(i) for i in range(n)],
    )
    path = model.save(folder / "run" / "models" / "round-0001.npz")
    store_path = folder / "device.db"
    with EventStore.create(store_path, model.item_ids) as store:
        ConsentManager(store).grant(1, 5, 6)
        store.append(Event("50", "click", 1.0, 1_700_000_000))
    return store_path, path.parent.parent


def measure(repeats: int) -> dict[str, Any]:
    """The median start-up seconds of each command."""
    with tempfile.TemporaryDirectory() as tmp:
        store, run = _device(Path(tmp))
        commands = {
            "help": [FEDPERS, "--help"],
            "version": [FEDPERS, "--version"],
            "simulate_help": [FEDPERS, "simulate", "--help"],
            "client_recommend": [FEDPERS, "client", "recommend", str(store), "--model", str(run)],
            "import_torch": [sys.executable, "-c", "import torch"],
        }
        seconds = {name: round(_median_seconds(cmd, repeats), 3) for name, cmd in commands.items()}
    return {
        "benchmark": "cli_startup",
        "repeats": repeats,
        "median_seconds": seconds,
        "target_seconds": TARGET_SECONDS,
        "passed": seconds["help"] < TARGET_SECONDS and seconds["client_recommend"] < TARGET_SECONDS,
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> int:
    """Run the benchmark; print a table, or one JSON object with --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (median)")
    args = parser.parse_args()
    result = measure(args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result["median_seconds"].items():
            print(f"{name:18} {value:6.3f} s")
        print(f"load average {result['load_average']}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
