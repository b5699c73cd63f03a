from __future__ import annotations

import numpy as np
import pytest
import torch

from fedpers.client.device_round import (
    DeviceContribution,
    RoundInstructions,
    initial_user_vector,
    initial_user_vectors,
    run_device_rounds,
    training_seed,
)
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.cohort import Cohort
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import LocalTrainConfig, train_devices
from fedpers.privacy.dp.clipping import l2_norm
from fedpers.privacy.dp.noise import device_rng
from fedpers.privacy.errors import ConfigError, DataError

torch.set_num_threads(1)

N_ITEMS, DIM = 40, 6
CFG = ModelConfig(n_items=N_ITEMS, dim=DIM)


def _setup(m: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    items = [
        np.sort(rng.choice(N_ITEMS, size=int(rng.integers(2, 10)), replace=False)) for _ in range(m)
    ]
    return shared_arrays(ItemSide(CFG, seed=1)), items, initial_user_vectors(5, list(range(m)), DIM)


def test_instructions_round_trip_through_a_flat_config() -> None:
    instr = RoundInstructions(
        server_round=4,
        seed=11,
        clip_norm=0.5,
        noise_share_std=0.02,
        local=LocalTrainConfig(epochs=3, lr_item=0.3, lr_bias=0.1, batch_size=8),
        indicator_noise_share_std=0.1,
    )
    flat = instr.to_config()
    assert all(isinstance(v, int | float | str | bool) for v in flat.values())
    assert all(isinstance(k, str) for k in flat)
    assert RoundInstructions.from_config(flat) == instr
    plain = RoundInstructions(server_round=1, seed=0, clip_norm=0.0, noise_share_std=0.0)
    assert RoundInstructions.from_config(plain.to_config()) == plain
    assert not plain.private


def test_instructions_reject_bad_values() -> None:
    with pytest.raises(ConfigError):
        RoundInstructions(server_round=1, seed=0, clip_norm=-1.0, noise_share_std=0.0)
    with pytest.raises(ConfigError):
        RoundInstructions(server_round=1, seed=0, clip_norm=0.0, noise_share_std=0.1)
    with pytest.raises(DataError, match="lacks 'server_round'"):
        RoundInstructions.from_config({"seed": 1})
    flat = RoundInstructions(server_round=1, seed=0, clip_norm=1.0, noise_share_std=0.0).to_config()
    for key, malformed in [
        ("clip_norm", "abc"),
        ("seed", 1.5),
        ("server_round", True),
        ("noise_share_std", [0.1]),
        ("indicator_noise_share_std", "none"),
        ("local.epochs", "2"),
        ("local.train_items", "false"),
        ("local.lr_bias", None),
    ]:
        with pytest.raises(DataError, match=repr(key.removeprefix("local."))):
            RoundInstructions.from_config({**flat, key: malformed})
    # a well-typed value out of range is still a configuration error
    with pytest.raises(ConfigError):
        RoundInstructions.from_config({**flat, "clip_norm": -1.0})
    with pytest.raises(ConfigError):
        RoundInstructions.from_config({**flat, "local.nope": 1})


def test_instructions_read_seeds_exactly_and_unset_optionals_as_none() -> None:
    flat = RoundInstructions(server_round=2, seed=2**62 + 1, clip_norm=1.0, noise_share_std=0.0)
    assert RoundInstructions.from_config(flat.to_config()).seed == 2**62 + 1
    without = {k: v for k, v in flat.to_config().items() if k != "indicator_noise_share_std"}
    assert RoundInstructions.from_config(without).indicator_noise_share_std is None


def test_contributions_are_clipped_and_noised_with_the_device_streams() -> None:
    g, items, users = _setup(5)
    instr = RoundInstructions(
        server_round=2, seed=3, clip_norm=0.05, noise_share_std=0.0, local=LocalTrainConfig()
    )
    ids = [10, 11, 12, 13, 14]
    out = run_device_rounds(GlobalParameters(g, CFG, None), Cohort(ids, items, users), instr)
    assert [c.device_id for c in out] == ids
    seeds = [training_seed(3, 2, d) for d in ids]
    raw = train_devices(
        GlobalParameters(g, CFG, None), Cohort(ids, items, users), instr.local, seeds
    )
    for c, r in zip(out, raw, strict=True):
        assert isinstance(c, DeviceContribution)
        assert c.norm == pytest.approx(l2_norm(r.delta), rel=1e-6)
        assert c.clipped == (c.norm > 0.05)
        assert l2_norm(c.arrays) <= 0.05 * (1 + 1e-5)
        np.testing.assert_allclose(c.user_vector, r.user_vector)
        assert c.n_examples == r.n_examples
    # with a noise share: clipped delta + N(0, std^2) from device_rng(seed, round, id)
    noisy = RoundInstructions(server_round=2, seed=3, clip_norm=0.05, noise_share_std=0.1)
    out2 = run_device_rounds(GlobalParameters(g, CFG, None), Cohort(ids, items, users), noisy)
    for c, c2, d in zip(out, out2, ids, strict=True):
        rng = device_rng(3, 2, d, "noise")
        expected = [a + (rng.standard_normal(a.shape) * 0.1).astype(np.float32) for a in c.arrays]
        for a, b in zip(c2.arrays, expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_user_vector_is_never_in_the_arrays() -> None:
    g, items, users = _setup(3)
    instr = RoundInstructions(server_round=1, seed=0, clip_norm=0.0, noise_share_std=0.0)
    out = run_device_rounds(GlobalParameters(g, CFG, None), Cohort([0, 1, 2], items, users), instr)
    for c in out:
        assert [a.shape for a in c.arrays] == [(N_ITEMS, DIM), (N_ITEMS,)]
        assert not c.clipped  # non-private: nothing is scaled


def test_node_mode_equals_cohort_mode() -> None:
    g, items, users = _setup(6)
    instr = RoundInstructions(
        server_round=7, seed=9, clip_norm=0.1, noise_share_std=0.01, indicator_noise_share_std=0.2
    )
    ids = ["a", "b", "c", "d", "e", "f"]
    cohort = run_device_rounds(GlobalParameters(g, CFG, None), Cohort(ids, items, users), instr)
    for i in (0, 3, 5):
        alone = run_device_rounds(
            GlobalParameters(g, CFG, None), Cohort([ids[i]], [items[i]], users[i : i + 1]), instr
        )[0]
        for a, b in zip(alone.arrays, cohort[i].arrays, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        assert alone.indicator == pytest.approx(cohort[i].indicator)
        np.testing.assert_allclose(alone.user_vector, cohort[i].user_vector, atol=1e-5)


def test_seeds_and_initial_vectors_are_stable_and_distinct() -> None:
    assert training_seed(1, 2, 3) == training_seed(1, 2, 3)
    assert training_seed(1, 2, 3) != training_seed(1, 3, 3)
    assert training_seed(1, 2, 3) != training_seed(1, 2, 4)
    a = initial_user_vector(0, "dev", 8)
    np.testing.assert_array_equal(a, initial_user_vector(0, "dev", 8))
    assert not np.array_equal(a, initial_user_vector(0, "dev2", 8))
    assert initial_user_vectors(0, [], 8).shape == (0, 8)


def test_mismatched_ids_raise() -> None:
    g, items, users = _setup(2)
    instr = RoundInstructions(server_round=1, seed=0, clip_norm=1.0, noise_share_std=0.0)
    with pytest.raises(ConfigError):
        run_device_rounds(GlobalParameters(g, CFG, None), Cohort([1], items, users), instr)
    with pytest.raises(ConfigError):
        run_device_rounds(GlobalParameters(g, CFG, None), Cohort([1, 1], items, users), instr)
