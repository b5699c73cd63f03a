"""Coordinator memory: peak RSS on ML-100K, and flat RSS over rounds with 100,000 devices.

Two federations, each in its own child process running ``fedpers simulate`` in-process
(the ServerApp, Flower's simulation engine and Ray's driver live in that process; the
ClientApps run in separate Ray actor processes, whose memory is reported beside it):

* ``ml100k``: 943 devices, every device every round, per-device replies (the
  coordinator receives 943 updates of about 220 KB each per round). Target: coordinator
  peak RSS <= 2 GB.
* ``synthetic``: 100,000 devices, Poisson sampling with ``q = 0.01`` (about 1,000 devices a
  round), summed replies per cohort node. Stores are created lazily, when a device is
  first sampled (the population's seed file holds every device's events until then),
  and evaluation uses a fixed sample of 500 devices. Target: the coordinator's RSS does
  not grow with rounds (last round within 5 % of the second).

Usage::

    python benchmarks/bench_memory.py --json
    python benchmarks/bench_memory.py --only synthetic --rounds 12 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GB = 1024**3
PEAK_TARGET_BYTES = 2 * GB
GROWTH_TARGET = 0.05


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _ray_worker_rss() -> int:
    """Summed RSS of this user's Ray worker processes (ClientApp actors)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"ray::" not in cmd and b"default_worker.py" not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def child(which: str, rounds: int, out: Path) -> dict[str, Any]:
    """Run one federation in this process and report its memory."""
    import torch

    from fedpers.simulation.federation.run import SimulateOptions, simulate

    torch.set_num_threads(1)
    samples: list[dict[str, Any]] = []
    workers: list[int] = []

    def on_round(summary: dict[str, Any]) -> None:
        samples.append({"round": summary["round"], "rss": _rss_bytes()})
        workers.append(_ray_worker_rss())

    if which == "ml100k":
        options = SimulateOptions(dataset="ml-100k", rounds=rounds, out=str(out))
    else:
        options = SimulateOptions(
            dataset="synthetic",
            rounds=rounds,
            out=str(out),
            sample_rate=0.01,
            reply="sum",
            lazy_devices=True,
            eval_devices=500,
            synthetic_users=100_000,
            synthetic_items=2_000,
        )
    t0 = time.perf_counter()
    result = simulate(options, progress=on_round)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stores = len(list((out / "devices").glob("device-*.db")))
    return {
        "which": which,
        "seconds": time.perf_counter() - t0,
        "peak_rss_bytes": peak,
        "rss_by_round": samples,
        "ray_workers_rss_bytes_max": max(workers, default=0),
        "num_devices": result["num_devices"],
        "rounds": result["rounds"],
        "stores_created": stores,
        "hr10_sampled": result["hr10_sampled"],
    }


def _spawn(which: str, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedpers-mem-") as tmp:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            which,
            "--rounds",
            str(rounds),
            "--out",
            tmp + "/run",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["ml100k", "synthetic"], default=None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per federation")
    parser.add_argument("--child", choices=["ml100k", "synthetic"], default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.out)))
        return 0
    result: dict[str, Any] = {}
    ok = True
    if args.only in (None, "ml100k"):
        ml = _spawn("ml100k", args.rounds or 3)
        result["ml100k_peak_rss_mb"] = round(ml["peak_rss_bytes"] / 2**20, 1)
        result["ml100k_meets_target"] = ml["peak_rss_bytes"] <= PEAK_TARGET_BYTES
        result["ml100k_ray_workers_rss_mb"] = round(ml["ray_workers_rss_bytes_max"] / 2**20, 1)
        result["ml100k_rounds"] = ml["rounds"]
        ok &= result["ml100k_meets_target"]
    if args.only in (None, "synthetic"):
        syn = _spawn("synthetic", args.rounds or 10)
        rss = [s["rss"] for s in syn["rss_by_round"]]
        base = rss[1] if len(rss) > 1 else rss[0]
        growth = (rss[-1] - base) / base
        result["synthetic_devices"] = syn["num_devices"]
        result["synthetic_rounds"] = syn["rounds"]
        result["synthetic_rss_mb_by_round"] = [round(r / 2**20, 1) for r in rss]
        result["synthetic_rss_growth_after_round_2"] = round(growth, 4)
        result["synthetic_peak_rss_mb"] = round(syn["peak_rss_bytes"] / 2**20, 1)
        result["synthetic_stores_created_lazily"] = syn["stores_created"]
        result["synthetic_meets_target"] = growth <= GROWTH_TARGET
        result["synthetic_seconds"] = round(syn["seconds"], 1)
        ok &= result["synthetic_meets_target"]
    result["meets_targets"] = bool(ok)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>36}: {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
