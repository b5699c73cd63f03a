"""Cohort mode, node mode and the in-process reference (fedsim) give the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from local_federation import client_grid, federation_config, synthetic_split

from fedpers.client.global_model import GlobalModel
from fedpers.client.session import SessionConfig
from fedpers.client.training.local import LocalTrainConfig
from fedpers.server.app import run_federation
from fedpers.simulation.federation.fedsim import FedSimConfig, run_fedsim
from fedpers.simulation.federation.population import prepare_devices

LOCAL: dict[str, object] = {"epochs": 1, "lr_item": 0.2, "lr_user": 0.5, "user_warmup": 3}


@pytest.fixture(scope="module")
def split_and_data():  # type: ignore[no-untyped-def]
    return synthetic_split(24, 50, seed=3)


def _run(tmp: Path, data, split, mode: str, reply: str = "per-device", **kw):  # type: ignore[no-untyped-def]
    pop = prepare_devices(tmp, data, split, seed=3)
    n = split.n_users
    config = federation_config(
        tmp,
        pop,
        rounds=3,
        seed=5,
        mode=mode,
        reply=reply,
        num_nodes=n if mode == "node" else 3,
        local=LOCAL,
        **kw,
    )
    return run_federation(client_grid(config, seed=1), config)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"dp": "user", "noise_multiplier": 0.7, "clip_norm": 0.5, "clients_per_round": 10},
        {"eval_local": {**LOCAL, "session_weight": 2.0, "session_decay": 0.6}},
    ],
    ids=["nonprivate-all", "dp-fixed-cohort", "session-ranking"],
)
def test_cohort_node_and_fedsim_agree(tmp_path: Path, split_and_data, kw) -> None:  # type: ignore[no-untyped-def]
    data, split = split_and_data
    cohort = _run(tmp_path / "cohort", data, split, "cohort", **kw)
    node = _run(tmp_path / "node", data, split, "node", **kw)
    summed = _run(tmp_path / "sum", data, split, "cohort", "sum", **kw)
    ref = run_fedsim(
        split,
        FedSimConfig(
            rounds=3,
            dim=8,
            local=LocalTrainConfig.from_dict(LOCAL),
            seed=5,
            clip_norm=kw.get("clip_norm", 0.0),
            noise_multiplier=kw.get("noise_multiplier", 0.0),
            clients_per_round=kw.get("clients_per_round"),
            eval_local=LocalTrainConfig.from_dict(kw["eval_local"]) if "eval_local" in kw else None,
        ),
    )
    assert cohort.rounds_completed == node.rounds_completed == 3
    for a, b, c, r in zip(
        cohort.arrays, node.arrays, summed.arrays, ref.global_arrays, strict=True
    ):
        # equal up to float32 rounding of the vectorised (cohort-batched) training
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, r, rtol=1e-5, atol=1e-6)
    for key in ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full"):
        assert cohort.metrics[key] == pytest.approx(getattr(ref.metrics, key), abs=1e-12)
        assert node.metrics[key] == pytest.approx(cohort.metrics[key], abs=1e-12)
    assert (cohort.epsilon is None) == ("noise_multiplier" not in kw)
    # the published model carries the ranking's session setting to the devices
    published = GlobalModel.load(sorted((tmp_path / "cohort" / "models").glob("*.npz"))[-1])
    expected = LocalTrainConfig.from_dict(kw.get("eval_local", LOCAL)).session
    assert SessionConfig.from_meta(published.meta["session"]) == expected
