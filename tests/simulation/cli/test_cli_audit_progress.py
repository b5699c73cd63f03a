"""The audit's in-process federations report their rounds, and `fedpers audit` shows them."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from fedpers.client.training.local import LocalTrainConfig
from fedpers.simulation.cli.audit import _federation_progress
from fedpers.simulation.data.interactions import InteractionData
from fedpers.simulation.evaluation.protocol import leave_one_out
from fedpers.simulation.federation.fedsim import FedSimConfig, run_fedsim
from fedpers.simulation.federation.round_observers import notify, observe_rounds

torch.set_num_threads(1)


def _tiny_split() -> Any:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(12), 5)
    items = rng.integers(0, 20, users.size)
    data = InteractionData(
        name="toy",
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        ratings=np.ones(users.size, dtype=np.float32),
        timestamps=rng.permutation(users.size).astype(np.int64),
        n_users=12,
        n_items=20,
        user_ids=[str(u) for u in range(12)],
        item_ids=[str(i) for i in range(20)],
    )
    return leave_one_out(data, n_negatives=5, seed=1)


def test_run_fedsim_reports_its_start_and_every_round() -> None:
    events: list[tuple[int, Any]] = []
    config = FedSimConfig(rounds=3, dim=4, local=LocalTrainConfig(epochs=1), seed=1)
    with observe_rounds(lambda rounds, entry: events.append((rounds, entry))):
        run_fedsim(_tiny_split(), config)
    assert [(r, None if e is None else e["round"]) for r, e in events] == [
        (3, None),
        (3, 1),
        (3, 2),
        (3, 3),
    ]
    run_fedsim(_tiny_split(), config)  # outside the block: nobody is told
    assert len(events) == 4


def test_the_audit_shows_each_federation_with_time_left() -> None:
    buffer = io.StringIO()
    with _federation_progress(Console(file=buffer, width=200), "auditing run: two federations"):
        for _federation in range(2):
            notify(2, None)
            notify(2, {"round": 1, "participants": 40})
            notify(2, {"round": 2, "participants": 40, "hr10_sampled": 0.5})
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "auditing run: two federations"
    assert lines[1] == "audit federation 1, round 0/2: training"
    assert lines[2].startswith("audit federation 1, round 1/2 (")
    assert "left): 40 devices" in lines[2]
    assert lines[3].endswith("~0:00:00 left): 40 devices, hr10_sampled 0.5000")
    assert lines[4] == "audit federation 2, round 0/2: training"
    assert lines.count("auditing run: two federations") == 1


def test_a_failing_audit_propagates_its_error() -> None:
    with pytest.raises(RuntimeError), _federation_progress(Console(file=io.StringIO())):
        notify(2, None)
        raise RuntimeError("boom")
