"""The audit's attacks: update inspection and the canary audit (with teeth)."""

from __future__ import annotations

import numpy as np
import pytest

from fedpers.client.device_round import initial_user_vector
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.local import LocalTrainConfig
from fedpers.privacy.dp import epsilon_for
from fedpers.privacy.errors import ConfigError
from fedpers.simulation.audit.attacks import (
    CanaryAuditConfig,
    default_k_values,
    evaluate_canary_scores,
    inspect_update,
    pick_inspection_device,
    run_canary_audit,
    run_canary_federation,
    with_canaries,
)
from fedpers.simulation.data.loader import load_dataset
from fedpers.simulation.data.synthetic import SyntheticConfig
from fedpers.simulation.evaluation.protocol import leave_one_out
from fedpers.simulation.federation.fedsim import FedSimConfig


@pytest.fixture(scope="module")
def small_split():  # type: ignore[no-untyped-def]
    data = load_dataset("synthetic", synthetic=SyntheticConfig(n_users=100, n_items=120))
    return leave_one_out(data)


def test_with_canaries_appends_items_and_every_canary_as_a_device(small_split) -> None:  # type: ignore[no-untyped-def]
    canary_items = small_split.n_items + np.arange(12).reshape(4, 3)
    included = np.array([True, False, True, False])
    aug = with_canaries(small_split, canary_items, included, repeats=2)
    n = small_split.n_users
    assert aug.n_items == small_split.n_items + 12
    # canary j is device n + j whatever the coin flips; excluded canaries hold nothing
    assert aug.n_users == n + 4
    assert aug.train_by_user[n].tolist() == np.tile(canary_items[0], 2).tolist()
    assert aug.train_by_user[n + 1].size == 0 and aug.train_by_user[n + 3].size == 0
    assert aug.train_by_user[n + 2].tolist() == np.tile(canary_items[2], 2).tolist()
    assert aug.test_items[-1] == -1 and aug.valid_items[-1] == -1
    rows = aug.train_items[aug.train_indptr[n + 2] : aug.train_indptr[n + 3]]
    assert rows.tolist() == np.tile(canary_items[2], 2).tolist()
    assert np.array_equal(np.diff(aug.train_indptr)[n:], [6, 0, 6, 0])
    # the excluded canaries' items exist in the catalogue but nobody holds them
    held = set(aug.train_items.tolist())
    assert not held & set(canary_items[1].tolist())
    with pytest.raises(ConfigError):
        with_canaries(small_split, canary_items, included[:3])


def test_update_inspection_plain_reveals_items_noise_hides_them(small_split) -> None:  # type: ignore[no-untyped-def]
    config = ModelConfig(n_items=small_split.n_items, dim=16)
    arrays = shared_arrays(ItemSide(config, seed=0))
    device = pick_inspection_device(small_split, min_items=5)
    section = inspect_update(
        small_split.train_by_user[device],
        config,
        arrays,
        LocalTrainConfig(),
        device_id=device,
        user_vector=initial_user_vector(0, device, 16),
        seed=0,
        server_round=1,
        clip_norm=0.1,
        noise_multiplier=2.0,
        noise_share_std=0.0,
        secure_aggregation=False,
    )
    by_name = {s["name"]: s for s in section["scenarios"]}
    assert by_name["plain"]["auc"] > 0.95
    # clipping rescales the whole update: the ranking and so the AUC are unchanged
    assert by_name["clipped"]["auc"] == pytest.approx(by_name["plain"]["auc"])
    assert by_name["clipped"]["visible_to_coordinator"]
    assert abs(by_name["clipped + noise sigma*C"]["auc"] - 0.5) < 0.25
    assert section["n_true"] == len(np.unique(small_split.train_by_user[device]))


def test_update_inspection_with_secure_aggregation_says_so(small_split) -> None:  # type: ignore[no-untyped-def]
    config = ModelConfig(n_items=small_split.n_items, dim=8)
    section = inspect_update(
        small_split.train_by_user[0],
        config,
        shared_arrays(ItemSide(config, seed=1)),
        LocalTrainConfig(epochs=1),
        device_id=0,
        user_vector=initial_user_vector(0, 0, 8),
        seed=0,
        server_round=1,
        clip_norm=0.5,
        noise_multiplier=1.0,
        noise_share_std=0.1,
        secure_aggregation=True,
    )
    assert not any(s["visible_to_coordinator"] for s in section["scenarios"])
    assert "holds no individual update" in section["statement"]


def test_default_k_values_fit_the_canaries() -> None:
    assert default_k_values(100) == [2, 5, 10, 25, 50]
    assert all(2 * k <= 7 for k in default_k_values(7))


def test_evaluate_scores_on_separated_and_random_scores() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    scores = {
        "update_alignment": included + 0.01 * rng.random(400),
        "bias_drift": rng.normal(size=400),
        "loss": rng.normal(size=400),
    }
    attacks, one_run, cp = evaluate_canary_scores(scores, included, 1e-5)
    assert [a["name"] for a in attacks] == ["update_alignment", "bias_drift", "loss"]
    assert attacks[0]["auc"] == 1.0 and attacks[0]["tpr_at_1pct_fpr"] == 1.0
    assert one_run["attack"] == "update_alignment" and one_run["epsilon"] > 3.0
    assert cp["attack"] == "update_alignment" and cp["epsilon"] > 1.0
    assert cp["tp"] + cp["fp"] + cp["tn"] + cp["fn"] == 200
    assert attacks[0]["roc"][0] == [0.0, 0.0] and attacks[0]["roc"][-1] == [1.0, 1.0]
    # a random score never feeds a large bound
    _, weak, _ = evaluate_canary_scores(scores, included, 1e-5, bound_attacks=["loss"])
    assert weak["epsilon"] < 0.5
    with pytest.raises(ConfigError):
        evaluate_canary_scores(scores, included, 1e-5, bound_attacks=["nope"])


def _run(split, clip: float, sigma: float, canaries: int, rounds: int):  # type: ignore[no-untyped-def]
    config = FedSimConfig(
        rounds=rounds, dim=16, clip_norm=clip, noise_multiplier=sigma, sample_rate=1.0
    )
    run = run_canary_federation(split, config, CanaryAuditConfig(canaries=canaries, seed=3))
    return evaluate_canary_scores(run.scores, run.included, 1e-5)


def test_canary_audit_has_teeth_small(small_split) -> None:  # type: ignore[no-untyped-def]
    # noise and clipping disabled: the attack separates members; with DP it cannot
    attacks_np, open_run, _ = _run(small_split, 0.0, 0.0, canaries=120, rounds=3)
    _, private_run, _ = _run(small_split, 0.5, 3.0, canaries=120, rounds=3)
    by_name = {a["name"]: a for a in attacks_np}
    assert by_name["update_alignment"]["auc"] > 0.95
    assert open_run["epsilon"] > 1.5
    assert open_run["epsilon"] > private_run["epsilon"] + 1.0
    claimed = epsilon_for(3.0, 1.0, 3, 1e-5).epsilon
    assert private_run["epsilon"] <= claimed


@pytest.mark.slow
def test_canary_audit_has_teeth() -> None:
    data = load_dataset("synthetic", synthetic=SyntheticConfig(n_users=200, n_items=300))
    split = leave_one_out(data)
    _, open_run, open_cp = _run(split, 0.0, 0.0, canaries=400, rounds=5)
    _, private_run, _ = _run(split, 0.5, 3.0, canaries=400, rounds=5)
    assert open_run["epsilon"] > 3.0
    assert open_cp["epsilon"] > 2.0
    assert open_run["epsilon"] > private_run["epsilon"] + 2.0
    assert private_run["epsilon"] <= epsilon_for(3.0, 1.0, 5, 1e-5).epsilon


def test_run_canary_audit_section(small_split) -> None:  # type: ignore[no-untyped-def]
    config = FedSimConfig(rounds=2, dim=8, clip_norm=0.5, noise_multiplier=1.0, sample_rate=1.0)
    section = run_canary_audit(
        small_split,
        config,
        CanaryAuditConfig(canaries=40),
        delta=1e-5,
        claimed_epsilon=5.0,
        audit_run_epsilon=5.0,
    )
    assert section["status"] == "measured"
    assert section["canaries"] == 40
    assert 0 < section["canaries_included"] < 40
    assert "replicates the audited run's privacy configuration" in section["statement"]
    assert section["configuration"]["noise_multiplier"] == 1.0
    assert section["one_run"] is not None and section["one_run"]["epsilon"] <= 5.0
