"""Round speed: cohort mode vs the pure local compute of the same round, and node mode.

Measured in one run on ML-100K (943 devices, every device every round):

* ``pure_local_seconds``: the round's local computation alone, in this process on one
  thread: :func:`fedpers.client.device_round.run_device_rounds` over all 943 devices
  (training, clipping), no Flower, no stores, with the model and local training of the
  recipe the simulations run (the non-private one,
  :func:`fedpers.simulation.federation.recipes.recommended_config`), so both time the same round;
* ``cohort_round_seconds``: the median wall time of a round (after the first, which warms
  up the Ray actors and opens every store) of ``fedpers simulate --mode cohort`` with two
  Flower nodes on Ray (one per core): sampling, messages, store reads and writes, local
  training, validation, aggregation, server step, run database and checkpoint;
* ``node_round_seconds``: the same for ``--mode node`` (one Flower node per device).

Target: ``cohort_round_seconds <= 2 * pure_local_seconds``.

Usage::

    python benchmarks/bench_round_speed.py --json
    python benchmarks/bench_round_speed.py --rounds 4 --node-rounds 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from simulate_child import run_simulate

from fedpers.client.device_round import (
    RoundInstructions,
    initial_user_vectors,
    run_device_rounds,
)
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.simulation.data import load_dataset
from fedpers.simulation.evaluation.protocol import leave_one_out
from fedpers.simulation.federation.recipes import recommended_config

TARGET_RATIO = 2.0


def pure_local_seconds(dataset: str, seed: int, repeats: int) -> tuple[float, int]:
    """Best-of-``repeats`` time of one round's local computation over every device.

    The round is the non-private recipe's, the one ``fedpers simulate`` runs without
    ``--dp`` (its ``dim``, initialisation and local training).
    """
    recipe = recommended_config(None)
    data = load_dataset(dataset, seed=seed)
    split = leave_one_out(data, seed=seed)
    config = ModelConfig(n_items=split.n_items, dim=recipe.dim, init_std=recipe.init_std)
    arrays = shared_arrays(ItemSide(config, seed=seed))
    devices = list(range(split.n_users))
    users = initial_user_vectors(seed, devices, recipe.dim)
    instructions = RoundInstructions(1, seed, 0.0, 0.0, recipe.local)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_device_rounds(
            GlobalParameters(arrays, config, None),
            Cohort(devices, split.train_by_user, users),
            instructions,
        )
        best = min(best, time.perf_counter() - t0)
    return best, split.n_users


def simulate_rounds(
    dataset: str, mode: str, rounds: int, out: Path, extra: list[str]
) -> dict[str, Any]:
    """Run ``fedpers simulate`` in a child process and read its per-round wall times."""
    run = run_simulate(
        ["--dataset", dataset, "--rounds", str(rounds), "--mode", mode, *extra], out, mode
    )
    return {
        "round_seconds": run.steady_round_seconds,
        "first_round_seconds": run.round_walls[0],
        "round_walls": run.round_walls,
        "total_seconds": run.total_seconds,
        "hr10_sampled": run.result["hr10_sampled"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--rounds", type=int, default=4, help="cohort-mode rounds")
    parser.add_argument("--node-rounds", type=int, default=2, help="node-mode rounds (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pure, n = pure_local_seconds(args.dataset, args.seed, repeats=2)
    with tempfile.TemporaryDirectory(prefix="fedpers-speed-") as tmp:
        cohort = simulate_rounds(args.dataset, "cohort", args.rounds, Path(tmp) / "cohort", [])
        node = (
            simulate_rounds(args.dataset, "node", args.node_rounds, Path(tmp) / "node", [])
            if args.node_rounds
            else None
        )
    ratio = cohort["round_seconds"] / pure
    result: dict[str, Any] = {
        "dataset": args.dataset,
        "num_devices": n,
        "pure_local_seconds": round(pure, 3),
        "cohort_round_seconds": round(cohort["round_seconds"], 3),
        "cohort_first_round_seconds": round(cohort["first_round_seconds"], 3),
        "cohort_round_walls": [round(w, 3) for w in cohort["round_walls"]],
        "cohort_over_pure": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio <= TARGET_RATIO),
        "node_round_seconds": None if node is None else round(node["round_seconds"], 3),
        "node_first_round_seconds": None if node is None else round(node["first_round_seconds"], 3),
        "node_over_cohort": None
        if node is None
        else round(node["round_seconds"] / cohort["round_seconds"], 2),
        "cohort_nodes": 2,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
