"""One privacy pipeline: every caller runs the same round to the same model (issue 13, item 2).

The Flower path (cohort and node mode, through :class:`LocalGrid`) and the in-process
driver (:func:`run_fedsim`, which the audit's canary federation and the benchmarks call)
run the same federation with one sampled device that refuses (P10 withdrawn). The
released sum then carries one noise share fewer than expected, and the top-up must come
from the contributions actually summed; every caller has to get the same model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from local_federation import client_grid, distributed_noise, federation_config, synthetic_split

import fedpers.server.dp_wrapper as dp_wrapper
import fedpers.simulation.federation.fedsim as fedsim
from fedpers.client.consent import ConsentManager
from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.store import EventStore
from fedpers.client.training.local import LocalTrainConfig
from fedpers.privacy.dp import pipeline
from fedpers.server.app import run_federation
from fedpers.simulation.federation.fedsim import FedSimConfig, run_fedsim
from fedpers.simulation.federation.population import prepare_devices

LOCAL: dict[str, object] = {"epochs": 1, "lr_item": 0.2, "lr_user": 0.5, "user_warmup": 3}
REFUSING = 1
SIGMA, CLIP = 0.7, 0.5


@pytest.fixture(scope="module")
def split_and_data():  # type: ignore[no-untyped-def]
    return synthetic_split(16, 40, seed=3)


def _flower(tmp: Path, data: Any, split: Any, mode: str, distributed: bool) -> list[np.ndarray]:
    pop = prepare_devices(tmp, data, split, seed=3)
    with EventStore.open(DevicesFolder(pop.devices_dir).store(REFUSING)) as store:
        ConsentManager(store).withdraw("P10")
    config = federation_config(
        tmp,
        pop,
        rounds=2,
        seed=5,
        mode=mode,
        num_nodes=split.n_users if mode == "node" else 3,
        local=LOCAL,
        dp="user",
        noise_multiplier=SIGMA,
        clip_norm=CLIP,
    )
    # distributed: the secure-aggregation noise placement, without the encryption
    with distributed_noise() if distributed else contextlib.nullcontext():
        outcome = run_federation(client_grid(config, seed=1), config)
    assert outcome.rounds_completed == 2
    return outcome.arrays


def _driver(split: Any, distributed: bool) -> list[np.ndarray]:
    result = run_fedsim(
        split,
        FedSimConfig(
            rounds=2,
            dim=8,
            local=LocalTrainConfig.from_dict(LOCAL),
            seed=5,
            clip_norm=CLIP,
            noise_multiplier=SIGMA,
            distributed_noise=distributed,
            absent=frozenset({REFUSING}),
        ),
    )
    return result.global_arrays


@pytest.mark.parametrize("distributed", [False, True], ids=["central", "distributed"])
def test_every_caller_gets_the_same_model_when_a_device_drops(
    tmp_path: Path, split_and_data: Any, distributed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, split = split_and_data
    calls: list[tuple[str, int | None]] = []

    def spy(where: str) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> pipeline.RoundNoise:
            calls.append((where, kwargs.get("contributions")))
            return pipeline.round_noise(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(dp_wrapper, "round_noise", spy("flower"))
    monkeypatch.setattr(fedsim, "round_noise", spy("driver"))
    cohort = _flower(tmp_path / "cohort", data, split, "cohort", distributed)
    node = _flower(tmp_path / "node", data, split, "node", distributed)
    reference = _driver(split, distributed)
    for a, b, r in zip(cohort, node, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)
    # both callers took the noise decision from the one function, counting the 15 reports
    summed = {(where, n) for where, n in calls if n is not None}
    assert summed == {("flower", split.n_users - 1), ("driver", split.n_users - 1)}


def test_top_up_counts_contributions_not_the_sampled_cohort() -> None:
    full = pipeline.round_noise(SIGMA, CLIP, 16.0, distributed=True, contributions=16)
    short = pipeline.round_noise(SIGMA, CLIP, 16.0, distributed=True, contributions=15)
    central = pipeline.round_noise(SIGMA, CLIP, 16.0, distributed=False, contributions=15)
    assert full.sum_std == 0.0
    # 15 shares of variance (sigma C)^2 / 16 plus the top-up give exactly (sigma C)^2
    assert 15 * short.share_std**2 + short.sum_std**2 == pytest.approx((SIGMA * CLIP) ** 2)
    assert central.share_std == 0.0 and central.sum_std == pytest.approx(SIGMA * CLIP)
    assert pipeline.round_noise(0.0, CLIP, 16.0, distributed=True).total_std == 0.0
