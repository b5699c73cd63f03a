"""Round wall time with and without ``--secure-agg he``, side by side (ML-100K cohort mode).

Runs ``fedpers simulate --mode cohort`` (two Flower nodes on Ray, every one of the 943
devices every round, user-level DP with distributed noise under HE) twice per reply mode,
once in plaintext and once with CKKS secure aggregation, and reads each round's wall time
from the run database. The median over the rounds after the first (which starts the
Ray actors, opens every store and, with HE, loads the public context) is reported.

Reply modes:

* ``sum`` (default): each cohort node encrypts the plaintext sum of its virtual devices
  once (``count`` = its devices) -- the cheap path a simulation can take;
* ``per-device`` (``--replies per-device``): every device encrypts its own update and the
  coordinator deserializes and adds 943 ciphertexts per round -- the cost a real
  deployment without gateways pays at the coordinator.

Usage::

    python benchmarks/bench_secagg_round.py --json
    python benchmarks/bench_secagg_round.py --rounds 2 --replies sum,per-device --json

The plaintext run adds central noise and the HE run distributed noise shares, so their
``hr10_sampled`` differ by the noise draw (``hr10_difference_other_noise``); the accuracy
equivalence is tested with the same noise in ``tests/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from simulate_child import run_simulate

from fedpers.server.app import SECAGG_SETUP_KEY
from fedpers.server.rundb import RunDB


def run(dataset: str, rounds: int, reply: str, scheme: str, out: Path) -> dict[str, Any]:
    """One ``fedpers simulate`` child process; its per-round wall times and result."""
    args = [
        "--dataset", dataset, "--rounds", str(rounds), "--mode", "cohort", "--reply", reply,
        "--secure-agg", scheme, "--dp", "user", "--noise-multiplier", "1.0",
    ]  # fmt: skip
    child = run_simulate(args, out, f"{scheme}/{reply}")
    walls = child.round_walls
    with RunDB.open(out) as db:
        privacy = db.read_privacy()
        per_record: dict[tuple[int, str, str], int] = {}
        for e in db.egress():
            if e["message_type"] == "train" and str(e["record"]).startswith("update."):
                key = (int(e["round"]), str(e["node_id"]), str(e["record"]))
                per_record[key] = per_record.get(key, 0) + int(e["bytes"])
        update_bytes = list(per_record.values())
    setup = privacy.get(SECAGG_SETUP_KEY) or {}
    return {
        "round_seconds": round(child.steady_round_seconds, 3),
        "first_round_seconds": round(walls[0], 3),
        "round_walls": [round(w, 3) for w in walls],
        "total_seconds": round(child.total_seconds, 3),
        "hr10_sampled": child.result["hr10_sampled"],
        "bytes_per_update_record": round(statistics.mean(update_bytes)) if update_bytes else None,
        "payloads_per_round": len(update_bytes) // max(1, len(walls)),
        "bytes_per_update_ciphertext": setup.get("bytes_per_update"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--replies", default="sum", help="comma-separated reply modes: sum, per-device"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    replies = [r.strip() for r in args.replies.split(",") if r.strip()]
    out: dict[str, Any] = {"dataset": args.dataset, "rounds": args.rounds, "cohort_nodes": 2}
    with tempfile.TemporaryDirectory(prefix="fedpers-secagg-round-") as tmp:
        for reply in replies:
            plain = run(args.dataset, args.rounds, reply, "none", Path(tmp) / f"{reply}-none")
            he = run(args.dataset, args.rounds, reply, "he", Path(tmp) / f"{reply}-he")
            out[reply] = {
                "plaintext": plain,
                "he": he,
                "he_overhead": round(he["round_seconds"] / plain["round_seconds"] - 1, 3),
                # central vs distributed noise: different draws, so not an accuracy test
                "hr10_difference_other_noise": round(
                    abs(he["hr10_sampled"] - plain["hr10_sampled"]), 4
                ),
            }
    out["cpu_count"] = os.cpu_count()
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
