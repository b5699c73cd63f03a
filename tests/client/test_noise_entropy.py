"""Where a device's noise share comes from: the run seed, or entropy only the device knows.

With ``"seeded"`` noise the coordinator, which chose the seed, can recompute every share
(reproducible simulation). With ``"device"`` noise (what deployments use) the tests try
to recompute a share from everything the coordinator knows and fail, while the share
still has the standard deviation the accountant counted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from local_federation import client_grid, distributed_noise, federation_config, synthetic_split

from fedpers.client.app import ClientSettings
from fedpers.client.device_round import (
    NoiseEntropy,
    RoundInstructions,
    initial_user_vectors,
    noise_generator,
    run_device_rounds,
)
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.wire import arrays_of
from fedpers.privacy.dp.noise import device_rng
from fedpers.privacy.errors import ConfigError
from fedpers.server.app import run_federation
from fedpers.simulation.federation.population import prepare_devices

N_ITEMS, DIM = 40, 6
CFG = ModelConfig(n_items=N_ITEMS, dim=DIM)
NOISY = RoundInstructions(server_round=2, seed=3, clip_norm=0.05, noise_share_std=0.1)


def _contributions(entropy: NoiseEntropy) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    items = [np.sort(rng.choice(N_ITEMS, size=5, replace=False)) for _ in range(3)]
    arrays = shared_arrays(ItemSide(CFG, seed=1))
    users = initial_user_vectors(5, [0, 1, 2], DIM)
    out = run_device_rounds(
        GlobalParameters(arrays, CFG, None), Cohort([0, 1, 2], items, users), NOISY, entropy
    )
    return [c.arrays for c in out]


def test_seeded_noise_is_the_coordinators_to_recompute() -> None:
    a = noise_generator("seeded", NOISY, 7).standard_normal(4)
    b = device_rng(NOISY.seed, NOISY.server_round, 7, "noise").standard_normal(4)
    np.testing.assert_array_equal(a, b)
    for x, y in zip(_contributions("seeded"), _contributions("seeded"), strict=True):
        for p, q in zip(x, y, strict=True):
            np.testing.assert_array_equal(p, q)


def test_device_noise_cannot_be_recomputed_from_the_seed_and_keeps_its_scale() -> None:
    seeded, first, second = (
        _contributions("seeded"),
        _contributions("device"),
        _contributions("device"),
    )
    for s, a, b in zip(seeded, first, second, strict=True):
        # the clipped update is the same; only the share differs, and differs every time
        flat = [np.concatenate([x.ravel() for x in arrays]) for arrays in (s, a, b)]
        assert not np.allclose(flat[0], flat[1]) and not np.allclose(flat[1], flat[2])
        # the difference of two independent shares has std sqrt(2) * 0.1
        assert np.std(flat[1] - flat[2]) == pytest.approx(np.sqrt(2) * 0.1, rel=0.1)
        assert np.std(flat[0] - flat[1]) == pytest.approx(np.sqrt(2) * 0.1, rel=0.1)


def test_unknown_noise_entropy_is_refused() -> None:
    with pytest.raises(ConfigError, match="noise entropy"):
        noise_generator("coordinator", NOISY, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="noise-entropy"):
        ClientSettings(noise_entropy="coordinator")  # type: ignore[arg-type]
    assert ClientSettings().resolve({"noise-entropy": "device"}).noise_entropy == "device"
    with pytest.raises(ConfigError, match="noise-entropy"):
        ClientSettings().resolve({"noise-entropy": "none"})


def _first_update(tmp_path: Path, entropy: NoiseEntropy) -> list[np.ndarray]:
    """Device 0's reply to the first train message of a private, distributed-noise round."""
    run = tmp_path / entropy
    data, split = synthetic_split(8, N_ITEMS, seed=1)
    pop = prepare_devices(run, data, split, seed=1)
    config = federation_config(
        run, pop, rounds=1, dim=DIM, mode="node", dp="user", noise_multiplier=1.0, clip_norm=0.5
    )
    seen: list[list[np.ndarray]] = []

    def intercept(request: Message, reply: Message) -> Message:
        if request.metadata.message_type == "train" and not seen:
            for name in reply.content:
                if name.startswith("update."):
                    seen.append(arrays_of(reply.content[name]))
                    break
        return reply

    settings = ClientSettings(devices_dir=config.devices_dir, mode="node", noise_entropy=entropy)
    with distributed_noise():
        run_federation(client_grid(config, seed=2, settings=settings, intercept=intercept), config)
    assert seen, "no update was sent"
    return seen[0]


def test_the_client_app_draws_its_share_as_the_node_is_configured(tmp_path: Path) -> None:
    seeded = [_first_update(tmp_path / f"s{k}", "seeded") for k in range(2)]
    device = [_first_update(tmp_path / f"d{k}", "device") for k in range(2)]
    for a, b in zip(*seeded, strict=True):
        np.testing.assert_array_equal(a, b)  # the same share on every run: recomputable
    assert not all(np.array_equal(a, b) for a, b in zip(*device, strict=True))
