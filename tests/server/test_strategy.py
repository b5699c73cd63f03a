"""The strategy and its DP wrapper: sampling, noise, accounting, budget, labels."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant
from local_federation import client_grid, federation_config, synthetic_split

from fedpers.client.app import make_client_app
from fedpers.client.wire import array_record
from fedpers.privacy.errors import ConfigError
from fedpers.server.aggregation import PlaintextAggregator, check_update_record
from fedpers.server.app import FederationOutcome, run_federation
from fedpers.server.config import FederationConfig
from fedpers.server.node_layout import NodeLayout
from fedpers.server.rundb import RunDB
from fedpers.simulation.federation.population import prepare_devices

N = 30


@pytest.fixture(scope="module")
def dataset():  # type: ignore[no-untyped-def]
    return synthetic_split(N, 30, seed=6)


def _run(
    tmp: Path, dataset, rounds: int = 3, **kw: object
) -> tuple[FederationOutcome, FederationConfig]:  # type: ignore[no-untyped-def]
    data, split = dataset
    pop = prepare_devices(tmp, data, split, seed=6)
    config = federation_config(tmp, pop, rounds=rounds, num_nodes=3, **kw)
    return run_federation(client_grid(config, seed=7), config), config


def _dp_accounting_epsilon(sigma: float, q: float, rounds: int, delta: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), rounds
    )
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))
    return float(RdpAccountant(orders).compose(event).get_epsilon(delta))


def test_reported_epsilon_matches_dp_accounting(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    outcome, _ = _run(
        tmp_path, dataset, rounds=4, dp="user", noise_multiplier=1.3, clip_norm=0.5, sample_rate=0.3
    )
    with RunDB.open(tmp_path) as db:
        rounds = db.rounds()
        privacy = db.read_privacy()
    completed = [r for r in rounds if r["status"] == "completed"]
    sigma = {r["noise_multiplier"] for r in completed}
    q = {r["sample_rate"] for r in completed}
    assert sigma == {1.3} and q == {0.3} and privacy["sampling"] == "poisson"
    reference = _dp_accounting_epsilon(1.3, 0.3, len(completed), privacy["delta"])
    assert outcome.epsilon is not None
    assert outcome.epsilon == pytest.approx(reference, rel=0.02)
    assert privacy["epsilon"] == outcome.epsilon
    assert rounds[-1]["epsilon"] == pytest.approx(outcome.epsilon)
    # epsilon grows round by round, one step per applied round
    eps = [r["epsilon"] for r in rounds]
    assert eps == sorted(eps) and len(set(eps)) == len(eps)
    # Poisson cohorts have random sizes; each round sampled what it reports
    assert all(r["sampled"] == r["participants"] for r in rounds)


def test_target_epsilon_solves_sigma_and_is_respected(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    outcome, config = _run(
        tmp_path, dataset, rounds=3, dp="user", target_epsilon=4.0, clip_norm=0.5
    )
    assert config.noise_multiplier is not None and config.noise_multiplier > 0
    assert outcome.rounds_completed == 3 and outcome.stopped_reason is None
    assert outcome.epsilon is not None and 3.8 < outcome.epsilon <= 4.0


def test_budget_stops_the_run_before_it_is_exceeded(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    outcome, _ = _run(
        tmp_path,
        dataset,
        rounds=10,
        dp="user",
        noise_multiplier=2.0,
        target_epsilon=3.0,
        clip_norm=0.5,
    )
    assert outcome.stopped_reason is not None and "budget" in outcome.stopped_reason
    assert outcome.epsilon is not None and outcome.epsilon <= 3.0
    assert outcome.rounds_completed == 3  # eps after 3 rounds is 2.63, after 4 above 3
    with RunDB.open(tmp_path) as db:
        assert len(db.rounds()) == outcome.rounds_completed
        assert db.read_privacy()["stopped_reason"] == outcome.stopped_reason


def test_non_private_run_is_labelled_and_never_has_an_epsilon(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    outcome, _ = _run(tmp_path, dataset, rounds=2)
    assert outcome.epsilon is None and outcome.delta is None and outcome.noise_multiplier is None
    with RunDB.open(tmp_path) as db:
        privacy = db.read_privacy()
        rounds = db.rounds()
    assert privacy["label"].startswith("non-private") and privacy["epsilon"] is None
    assert privacy["noise_multiplier"] is None and privacy["delta"] is None
    assert all(r["epsilon"] is None and r["noise_multiplier"] is None for r in rounds)
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        assert json.loads(line)["epsilon"] is None
    assert json.loads((tmp_path / "config.json").read_text())["dp"] == "none"


def test_central_noise_is_sigma_times_c(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    noisy, _ = _run(
        tmp_path / "a", dataset, rounds=1, dp="user", noise_multiplier=2.0, clip_norm=0.25
    )
    with RunDB.open(tmp_path / "a") as db:
        [row] = db.rounds()
    assert row["noise_std"] == pytest.approx(0.5)
    # norms are monitoring values: without the monitoring flag none reached the coordinator
    assert row["clip_norm"] == 0.25 and row["norm_max"] is None and row["clipped_fraction"] is None
    # clipping alone (tiny noise) vs sigma = 2: the difference is noise of std sigma C / m
    quiet, _ = _run(
        tmp_path / "b", dataset, rounds=1, dp="user", noise_multiplier=1e-6, clip_norm=0.25
    )
    diff = np.concatenate(
        [(a - b).ravel() for a, b in zip(noisy.arrays, quiet.arrays, strict=True)]
    )
    assert np.std(diff) == pytest.approx(0.5 / N, rel=0.15)


def test_adaptive_clipping_moves_c_and_is_accounted(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    outcome, config = _run(
        tmp_path,
        dataset,
        rounds=3,
        dp="user",
        noise_multiplier=1.0,
        clip_norm=5.0,
        adaptive_clip=True,
        count_noise_std=2.0,
        target_quantile=0.5,
    )
    with RunDB.open(tmp_path) as db:
        rounds = db.rounds()
        privacy = db.read_privacy()
    clips = [r["clip_norm"] for r in rounds]
    assert clips[0] == 5.0 and clips[1] < clips[0]  # every update was far below C: C shrinks
    assert privacy["clipping"] == "adaptive" and privacy["count_noise_std"] == 2.0
    # the accountant records the combined multiplier sigma, not the update's sigma_u
    assert all(r["noise_multiplier"] == 1.0 for r in rounds)
    sigma_u = (1.0**-2 - (2 * 2.0) ** -2) ** -0.5
    assert rounds[0]["noise_std"] == pytest.approx(sigma_u * 5.0)
    assert outcome.clip_norm == pytest.approx(privacy["final_clip_norm"])
    assert config.adaptive() is not None


def test_fixed_cohorts_are_accounted_as_sampled_without_replacement(
    tmp_path: Path, dataset
) -> None:  # type: ignore[no-untyped-def]
    outcome, _ = _run(
        tmp_path,
        dataset,
        rounds=2,
        dp="user",
        noise_multiplier=1.5,
        clip_norm=0.5,
        clients_per_round=10,
    )
    with RunDB.open(tmp_path) as db:
        privacy = db.read_privacy()
        rounds = db.rounds()
    assert privacy["sampling"] == "fixed" and privacy["cohort_size"] == 10
    assert (
        "without replacement" in privacy["accountant_method"].lower()
        or "Sampled" in privacy["accountant_method"]
    )
    assert all(r["sampled"] == 10 for r in rounds)
    assert outcome.epsilon is not None and outcome.epsilon > 0


def test_invalid_privacy_options_are_config_errors(tmp_path: Path) -> None:
    base = {
        "run_dir": str(tmp_path),
        "devices_dir": str(tmp_path),
        "rounds": 1,
        "num_devices": 5,
        "n_items": 4,
    }
    with pytest.raises(ConfigError, match="--epsilon or --noise-multiplier"):
        FederationConfig(**base, dp="user", clip_norm=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="need user-level DP"):
        FederationConfig(**base, noise_multiplier=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive --clip"):
        FederationConfig(**base, dp="user", noise_multiplier=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not both"):
        FederationConfig(**base, sample_rate=0.5, clients_per_round=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sum replies"):
        FederationConfig(**base, mode="node", reply="sum")  # type: ignore[arg-type]


def test_update_record_checks() -> None:
    names, shapes = ["w", "b"], [(2, 2), (2,)]
    good = array_record(names, [np.ones((2, 2), np.float32), np.zeros(2, np.float32)])
    arrays, reason, norm = check_update_record(good, names, shapes, 10.0)
    assert reason is None and arrays is not None and norm == pytest.approx(2.0)
    assert check_update_record(good, names, shapes, 1.0)[1] == "norm_exceeds_bound"
    assert check_update_record(good, ["b", "w"], shapes[::-1], 10.0)[1] == "wrong_arrays"
    agg = PlaintextAggregator(names, shapes)
    agg.reset(1)
    assert agg.add("a", good, 1, 10.0) is None
    assert agg.add("node", good, 2, 1.5) is None  # a sum of 2 may reach 2 * bound
    assert agg.count == 3
    np.testing.assert_array_equal(agg.total()[0], np.full((2, 2), 2.0, np.float32))


def test_node_layout_from_handshake() -> None:
    from flwr.app import Message, MetricRecord, RecordDict
    from local_grid import LocalGrid as _Grid

    _Grid(make_client_app(), 1)  # sets the task identity Messages need
    replies = []
    for partition, node in [(1, 101), (0, 100)]:
        msg = Message(
            RecordDict(
                {
                    "node": MetricRecord(
                        {"partition-id": partition, "num-partitions": 2, "device-id": partition}
                    )
                }
            ),
            dst_node_id=0,
            message_type="query",
        )
        msg.metadata.__dict__["_src_node_id"] = node
        replies.append(msg)
    cohort = NodeLayout.from_hello("cohort", replies)
    assert cohort.nodes == (100, 101) and cohort.node_of(4) == 100 and cohort.node_of(5) == 101
    node = NodeLayout.from_hello("node", replies)
    assert node.node_of(1) == 101 and node.node_of(7) is None
    groups, orphans = node.group([0, 1, 7])
    assert groups == {100: [0], 101: [1]} and orphans == [7]
