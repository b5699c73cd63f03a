"""Centralized BPR reference and popularity baseline on MovieLens-100K.

The figures the federation is measured against (issue 4 targets are relative to
them): leave-one-out by timestamp, epochs selected on the validation item, refit on
everything before the test item, HR@10 and NDCG@10 against 99 sampled negatives and
against the full catalogue minus the user's history, catalogue coverage of the top 10,
training wall time, and per-group (gender, age band) figures with their gaps.

Usage::

    python benchmarks/bench_centralized.py            # a table
    python benchmarks/bench_centralized.py --json     # one JSON object on stdout
    python benchmarks/bench_centralized.py --seeds 0 1 2 --json

Exit status 1 when the acceptance targets (hr10_sampled >= 0.65 and hr10_full >= 0.12,
means over the seeds) are missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from typing import Any

import torch

from fedpers.simulation.data import load_dataset
from fedpers.simulation.evaluation.centralized import CentralizedConfig, centralized_report

TARGETS = {"hr10_sampled": 0.65, "hr10_full": 0.12}
METRICS = ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full", "coverage10")


def run(dataset: str, seeds: list[int], progress: bool) -> dict[str, Any]:
    """Run the reference once per seed and summarise."""
    data = load_dataset(dataset)
    runs = [
        centralized_report(data, CentralizedConfig(seed=seed), progress=progress) for seed in seeds
    ]
    first = runs[0]
    mean = {
        m: statistics.fmean(r[m] for r in runs)
        for m in (*METRICS, "train_seconds", "train_cpu_seconds")
    }
    result: dict[str, Any] = {
        "benchmark": "centralized",
        "model": first["model"],
        "dataset": first["dataset"],
        **{m: round(v, 4) for m, v in mean.items()},
        "num_users": first["num_users"],
        "num_items": first["num_items"],
        "seeds": seeds,
        "per_seed": [
            {
                "seed": s,
                "best_epoch": r["best_epoch"],
                "train_seconds": r["train_seconds"],
                **{m: r[m] for m in METRICS},
            }
            for s, r in zip(seeds, runs, strict=True)
        ],
        "config": first["config"],
        "popularity": first["popularity"],
        "groups": first["groups"],
        "group_gaps": first["group_gaps"],
        "targets": TARGETS,
        "within_targets": all(mean[m] >= t for m, t in TARGETS.items()),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    return result


def table(result: dict[str, Any]) -> str:
    """The model beside popularity as a text table."""
    lines = [
        f"centralized reference on {result['dataset']} "
        f"({result['num_users']} users, {result['num_items']} items, seeds {result['seeds']})",
        f"{'metric':<16}{result['model']:>10}{'popularity':>12}",
    ]
    for m in METRICS:
        lines.append(f"{m:<16}{result[m]:>10.4f}{result['popularity'][m]:>12.4f}")
    lines.append(f"{'train seconds':<16}{result['train_seconds']:>10.1f}")
    lines.append(f"{'train cpu s':<16}{result['train_cpu_seconds']:>10.1f}")
    verdict = "within" if result["within_targets"] else "MISSES"
    lines.append(f"{verdict} targets {result['targets']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = run(args.dataset, args.seeds, progress=not args.no_progress)
    print(json.dumps(result) if args.json else table(result))
    return 0 if result["within_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
