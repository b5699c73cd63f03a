"""Every value a device sends is on the egress catalogue and protected (issue 13, item 1).

The tests run real federations (Flower messages through :class:`LocalGrid` in cohort and
node mode, and real SuperLink/SuperNode processes in deployment mode), look at every
reply the coordinator received and fail on any per-device plaintext value that the
catalogue (:mod:`fedpers.client.egress`) does not list as protected. With the explicit
monitoring flag the statistics do travel, and are labelled as unprotected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message
from leftover_processes import stop_leftovers
from local_federation import client_grid, federation_config, synthetic_split
from local_grid import LocalGrid

from fedpers.client.app import ClientSettings
from fedpers.client.egress import PROTECTED, protection_of
from fedpers.server.app import run_federation
from fedpers.server.collect import egress_of
from fedpers.server.config import MONITORING_WARNING, FederationConfig
from fedpers.server.rundb import RunDB
from fedpers.server.secure_aggregation import ckks_backend, ensure_keys
from fedpers.simulation.audit.sections import egress_section
from fedpers.simulation.data import SyntheticConfig
from fedpers.simulation.federation.population import prepare_devices

N_USERS, N_ITEMS, DIM = 12, 30, 8
STATISTICS = {"norm", "clipped", "n-examples", "loss", "loss-sum", "norm-sum", "norm-max"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_keys(tmp_path_factory.mktemp("secagg") / "keys")


def _federate(
    tmp: Path, mode: str, reply: str, secure: Path | None, **kw: Any
) -> tuple[LocalGrid, FederationConfig]:
    data, split = synthetic_split(N_USERS, N_ITEMS, seed=4)
    pop = prepare_devices(tmp, data, split, seed=4)
    config = federation_config(
        tmp,
        pop,
        rounds=2,
        dim=DIM,
        mode=mode,
        reply=reply,
        dp="user",
        noise_multiplier=0.8,
        clip_norm=0.5,
        eval_every=1,
        secure_agg="he" if secure else "none",
        secagg_keys=str(secure or ""),
        **kw,
    )
    settings = ClientSettings(
        devices_dir=str(pop.devices_dir), mode=mode, secagg_context=str(secure or "")
    )
    grid = client_grid(config, seed=2, settings=settings)
    if secure is None:
        run_federation(grid, config)
    else:
        with ckks_backend(secure) as factory:
            run_federation(grid, config, aggregator_factory=factory)
    return grid, config


def _received(grid: LocalGrid, secure: bool) -> list[tuple[Message, str, str, str | None]]:
    """``(reply, record, name, protection)`` for every entry of every received reply."""
    out = []
    for reply in grid.received:
        kind = reply.metadata.message_type
        for entry in egress_of(kind, reply, reply.metadata.src_node_id, secure):
            protection = protection_of(
                kind, entry.record, entry.name, entry.kind, entry.dtype, secure
            )
            out.append((reply, entry.record, entry.name, protection))
    return out


CASES = [
    ("cohort", "per-device", False),
    ("cohort", "sum", False),
    ("node", "per-device", False),
    ("cohort", "per-device", True),
    ("cohort", "sum", True),
    ("node", "per-device", True),
]


@pytest.mark.parametrize(("mode", "reply", "secure"), CASES)
def test_no_unprotected_per_device_value_leaves_by_default(
    tmp_path: Path, keys: Path, mode: str, reply: str, secure: bool
) -> None:
    grid, _ = _federate(tmp_path, mode, reply, keys if secure else None)
    entries = _received(grid, secure)
    train = [e for e in entries if e[0].metadata.message_type == "train"]
    assert any(record.startswith("update.") for _, record, _, _ in train)
    for _, record, name, protection in train:
        assert protection in PROTECTED, f"{record}/{name}: {protection or 'not catalogued'}"
        assert name not in STATISTICS, f"{record}/{name} is a monitoring statistic"
        if secure and record.startswith("update."):
            assert protection == "secure_sum", f"{record}/{name} left in plaintext"
        assert protection != "monitoring_plaintext"
    per_device_metrics = [
        m.content.metric_records[k]
        for m, *_ in train
        for k in m.content.metric_records
        if k.startswith("metrics.") and k != "metrics.sum"
    ]
    assert per_device_metrics == []  # fixed clipping: nothing but the update leaves a device
    # the coordinator's egress table holds the same classification for every entry
    with RunDB.open(tmp_path) as db:
        rows = list(db.egress())
        privacy = db.read_privacy()
    assert rows and all(r["protection"] for r in rows)
    assert {r["protection"] for r in rows if r["message_type"] == "train"} <= PROTECTED
    assert privacy["monitoring_metrics"] == "off" and privacy["monitoring_warning"] is None
    line = egress_section(rows, {"n_items": N_ITEMS, "dim": DIM}, secure)["checks"][-1]
    assert "Protection of the recorded entries" in line and "monitoring_plaintext" not in line


@pytest.mark.parametrize("secure", [False, True])
def test_monitoring_flag_sends_statistics_labelled_unprotected(
    tmp_path: Path, keys: Path, secure: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        grid, _ = _federate(
            tmp_path,
            "cohort",
            "per-device",
            keys if secure else None,
            monitoring_metrics="plaintext",
        )
    assert "MONITORING METRICS IN PLAINTEXT" in caplog.text
    names = {(name, protection) for _, record, name, protection in _received(grid, secure)}
    assert ("loss", "monitoring_plaintext") in names and ("norm", "monitoring_plaintext") in names
    with RunDB.open(tmp_path) as db:
        privacy = db.read_privacy()
        rows = list(db.egress())
        rounds = db.rounds()
    assert privacy["monitoring_metrics"] == "plaintext"
    assert privacy["monitoring_warning"] == MONITORING_WARNING
    assert {r["protection"] for r in rows if r["name"] == "loss"} == {"monitoring_plaintext"}
    assert rounds[-1]["norm_max"] is not None
    # the audit's egress section says what protected the entries, and names the flag
    config = {"n_items": N_ITEMS, "dim": DIM}
    line = egress_section(rows, config, secure)["checks"][-1]
    assert "monitoring_plaintext" in line and "NOT covered by the DP guarantee" in line


def test_adaptive_clipping_bit_outside_the_ciphertext_needs_the_flag(tmp_path: Path) -> None:
    from fedpers.privacy.errors import ConfigError

    with pytest.raises(ConfigError, match="monitoring-metrics plaintext"):
        FederationConfig(
            run_dir=str(tmp_path),
            devices_dir=str(tmp_path),
            rounds=1,
            num_devices=4,
            n_items=5,
            dp="user",
            noise_multiplier=1.0,
            clip_norm=0.5,
            adaptive_clip=True,
            secure_agg="he",
        )


def test_adaptive_clipping_without_secure_aggregation_sends_only_the_noised_bit(
    tmp_path: Path,
) -> None:
    grid, _ = _federate(tmp_path, "node", "per-device", None, adaptive_clip=True)
    train = [e for e in _received(grid, False) if e[0].metadata.message_type == "train"]
    metric_names = {name for _, record, name, _ in train if record.startswith("metrics.")}
    assert metric_names == {"indicator"}
    assert {p for *_, p in train} <= PROTECTED
    with RunDB.open(tmp_path) as db:
        rounds = db.rounds()
    # the clipped fraction reported is adaptive clipping's DP release, not a plaintext count
    assert all(r["clipped_fraction"] is not None for r in rounds)
    assert all(r["norm_max"] is None for r in rounds)


# -- deployment mode: real SuperLink and SuperNodes -------------------------------------------


@pytest.mark.slow  # ~60 s: Flower polls every 3 s and starts a ClientApp process per message
@pytest.mark.integration
@pytest.mark.parametrize("secure", ["none", "he"])
def test_deployment_egress_is_catalogued_and_protected(tmp_path: Path, secure: str) -> None:
    from fedpers.simulation.data import generate_synthetic, write_interaction_log
    from fedpers.simulation.deploy.launcher import run_local
    from fedpers.simulation.deploy.plan import prepare_deployment
    from fedpers.simulation.federation.run import SimulateOptions

    data = generate_synthetic(SyntheticConfig(n_users=16, n_items=30, events_per_user=8, seed=2))
    log = write_interaction_log(data, tmp_path / "tiny.csv")
    options = SimulateOptions(
        dataset=str(log), rounds=2, recipe="none", dim=8, num_nodes=2, dp="user",
        noise_multiplier=0.8, clip=0.5, secure_agg=secure, reply="sum",
    )  # fmt: skip
    plan = prepare_deployment(options, tmp_path / "run")
    try:
        run_local(plan.run_dir, timeout=300)
    finally:
        stop_leftovers(tmp_path)
    with RunDB.open(plan.root) as db:
        rows = list(db.egress())
        privacy = db.read_privacy()
    train = [r for r in rows if r["message_type"] == "train"]
    assert train and privacy["monitoring_metrics"] == "off"
    for row in train:
        assert row["protection"] in PROTECTED, row
        assert row["name"] not in STATISTICS, row
    if secure == "he":
        updates = [r for r in train if r["record"].startswith("update.")]
        assert updates and {r["protection"] for r in updates} == {"secure_sum"}


def test_simulate_options_carry_the_monitoring_flag(tmp_path: Path) -> None:
    from fedpers.simulation.federation.run import SimulateOptions, build_config

    options = SimulateOptions(
        dataset="synthetic", synthetic_users=8, synthetic_items=20, rounds=1, recipe="none"
    )
    default, _ = build_config(options, tmp_path / "a")
    flagged, _ = build_config(
        SimulateOptions(**{**options.__dict__, "monitoring_metrics": "plaintext"}), tmp_path / "b"
    )
    assert default.monitoring_metrics == "off" and not default.monitoring
    assert flagged.monitoring and flagged.privacy_parameters()["monitoring_warning"]
