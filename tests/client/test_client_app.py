"""The Flower ClientApp: egress (what leaves a device), refusals, node/cohort hosting."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from local_federation import client_grid, federation_config, synthetic_split
from local_grid import LocalGrid

from fedpers.client.app import ClientSettings, make_client_app
from fedpers.client.consent import ConsentManager
from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.protocol import DeviceStatus
from fedpers.client.store import EventStore, LedgerEntry
from fedpers.server.app import run_federation
from fedpers.server.config import FederationConfig
from fedpers.server.rundb import RunDB
from fedpers.simulation.federation.population import DevicePopulation, prepare_devices

N_USERS, N_ITEMS, DIM = 16, 40, 8
SHARED = {"item_embedding": (N_ITEMS, DIM), "item_bias": (N_ITEMS,)}
ALLOWED_METRICS = {
    "per-device": {"norm", "clipped", "n-examples", "loss", "indicator"},
    "sum": {
        "count",
        "clipped",
        "n-examples",
        "loss-sum",
        "norm-sum",
        "norm-max",
        "device-ids",
        "indicator",
    },
    "eval": {"count", "hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full"},
    "node": {"partition-id", "num-partitions", "device-id"},
}


def _population(tmp: Path, **kw: float) -> DevicePopulation:
    data, split = synthetic_split(N_USERS, N_ITEMS, seed=1)
    return prepare_devices(tmp, data, split, seed=1, **kw)  # type: ignore[arg-type]


def _config(
    tmp: Path, pop: DevicePopulation, mode: str, reply: str, **kw: object
) -> FederationConfig:
    return federation_config(
        tmp,
        pop,
        rounds=2,
        dim=DIM,
        mode=mode,
        reply=reply,
        eval_every=1,
        **kw,
    )


def _run(
    tmp: Path,
    pop: DevicePopulation,
    mode: str,
    reply: str,
    settings: ClientSettings | None = None,
    **kw: object,
) -> LocalGrid:
    config = _config(tmp, pop, mode, reply, **kw)
    grid = client_grid(config, seed=2, settings=settings)
    run_federation(grid, config)
    return grid


def _private_bytes(pop: DevicePopulation) -> list[bytes]:
    """Every device's private user vector and history, as the bytes they would travel as."""
    out = []
    for d in range(N_USERS):
        with EventStore.open(DevicesFolder(pop.devices_dir).store(d)) as store:
            vec = store.load_user_vector()
            hist = store.history_indices()
        if vec is not None:
            out.append(vec.astype("<f4").tobytes())
        if hist.size >= 3:
            out.append(hist.astype("<i8").tobytes())
            out.append(hist.astype("<i4").tobytes())
    return out


def _check_reply(reply: Message, reply_mode: str, private: list[bytes]) -> None:
    assert not reply.has_error(), reply.error
    content = reply.content
    assert len(content.config_records) == 0, "a device sent a ConfigRecord (strings)"
    for name, record in content.array_records.items():
        assert name.startswith("update."), name
        assert {k: tuple(record[k].shape) for k in record} == SHARED
        for key in record:
            assert record[key].dtype == "float32"
            data = bytes(record[key].data)
            for secret in private:
                assert secret not in data, f"private bytes found in {name}/{key}"
    for name, metrics in content.metric_records.items():
        if name.startswith("metrics."):
            allowed = ALLOWED_METRICS["sum" if name == "metrics.sum" else "per-device"]
        elif name == "status":
            allowed = set(metrics)
            assert all(int(k) >= 0 for k in metrics)
            assert all(int(v) in {s.value for s in DeviceStatus} for v in metrics.values())  # type: ignore[call-overload]
        else:
            allowed = ALLOWED_METRICS[name]
        assert set(metrics) <= allowed, (name, set(metrics) - allowed)
        for key, value in metrics.items():
            values = value if isinstance(value, list) else [value]
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            assert all(math.isfinite(float(v)) for v in values)
            if isinstance(value, list):
                assert key == "device-ids"


@pytest.mark.parametrize(
    ("mode", "reply"), [("cohort", "per-device"), ("cohort", "sum"), ("node", "per-device")]
)
def test_egress_only_shared_shapes_and_numbers(tmp_path: Path, mode: str, reply: str) -> None:
    pop = _population(tmp_path)
    grid = _run(tmp_path, pop, mode, reply)
    private = _private_bytes(pop)
    assert len(private) >= N_USERS  # every device kept a private vector
    train = [m for m in grid.received if m.metadata.message_type == "train"]
    evaluate = [m for m in grid.received if m.metadata.message_type == "evaluate"]
    assert train and evaluate
    for message in grid.received:
        _check_reply(message, reply, private)
    # the coordinator's egress catalogue agrees: arrays have the shared shapes only
    with RunDB.open(tmp_path) as db:
        rows = list(db.egress())
    arrays = [r for r in rows if r["kind"] == "array"]
    assert arrays and {(r["name"], r["shape"]) for r in arrays} == {
        ("item_embedding", f"[{N_ITEMS}, {DIM}]"),
        ("item_bias", f"[{N_ITEMS}]"),
    }
    assert {r["kind"] for r in rows} <= {"array", "metric"}


def _set(pop: DevicePopulation, device: int, action: str) -> None:
    with EventStore.open(DevicesFolder(pop.devices_dir).store(device)) as store:
        manager = ConsentManager(store)
        if action == "withdraw-p10":
            manager.withdraw("P10")
        elif action == "gpc":
            manager.set_gpc(True)
        elif action == "spend":
            store.append_ledger(
                LedgerEntry(
                    round=0,
                    epsilon=5.0,
                    delta=1e-5,
                    noise_multiplier=1.0,
                    sample_rate=0.1,
                    steps=10,
                    accountant="rdp",
                    created_at=time.time(),
                )
            )


@pytest.mark.parametrize("mode", ["cohort", "node"])
def test_refusals_send_no_update(tmp_path: Path, mode: str) -> None:
    pop = _population(tmp_path)
    _set(pop, 1, "withdraw-p10")
    _set(pop, 2, "gpc")
    _set(pop, 3, "spend")
    settings = ClientSettings(
        devices_dir=str(pop.devices_dir), mode=mode, record_epsilon_budget=4.0
    )
    grid = _run(tmp_path, pop, mode, "per-device", settings=settings)
    expected = {1: DeviceStatus.NO_CONSENT, 2: DeviceStatus.GPC, 3: DeviceStatus.BUDGET_SPENT}
    seen: dict[int, int] = {}
    for reply in grid.received:
        content = reply.content
        for device in expected:
            assert f"update.{device}" not in content.array_records
            assert f"metrics.{device}" not in content.metric_records
        if reply.metadata.message_type == "train" and reply.metadata.group_id == "1":
            status = content.metric_records.get("status", {})
            seen.update({int(k): int(v) for k, v in status.items()})  # type: ignore[call-overload]
    assert seen == {d: int(s) for d, s in expected.items()}
    with RunDB.open(tmp_path) as db:
        rows = db.participants(1)
        rounds = db.rounds()
    reasons = {r["device_id"]: (r["status"], r["reason"]) for r in rows}
    assert reasons[1] == ("refused", "no_p10_consent")
    assert reasons[2] == ("refused", "gpc_opt_out")
    assert reasons[3] == ("refused", "budget_spent")
    assert sum(1 for r in rows if r["status"] == "accepted") == N_USERS - 3
    assert rounds[0]["refused"] == 3 and rounds[0]["participants"] == N_USERS - 3


def test_withdrawal_takes_effect_on_the_next_round(tmp_path: Path) -> None:
    pop = _population(tmp_path)
    withdrawn: list[int] = []

    def intercept(request: Message, reply: Message) -> Message:
        # after the first train message, the user of device 0 withdraws P10
        if request.metadata.message_type == "train" and not withdrawn:
            _set(pop, 0, "withdraw-p10")
            withdrawn.append(0)
        return reply

    config = _config(tmp_path, pop, "cohort", "per-device")
    run_federation(client_grid(config, seed=2, intercept=intercept), config)
    with RunDB.open(tmp_path) as db:
        status = {r["round"]: r["status"] for r in db.participants() if r["device_id"] == 0}
    assert status[2] == "refused"


def test_node_mode_node_refuses_devices_it_does_not_host(tmp_path: Path) -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    from fedpers.client.device_round import RoundInstructions
    from fedpers.client.protocol import NodeRequest
    from fedpers.client.wire import request_record

    pop = _population(tmp_path)
    app = make_client_app(ClientSettings(devices_dir=str(pop.devices_dir), mode="node"))
    grid = LocalGrid(app, 1, seed=3)  # builds the task identity Messages need
    node = next(iter(grid.get_node_ids()))
    arrays = ArrayRecord({k: Array(np.zeros(s, np.float32)) for k, s in SHARED.items()})
    content = RecordDict(
        {
            "arrays": arrays,
            "config": ConfigRecord(RoundInstructions(1, 0, 0.0, 0.0).to_config()),  # type: ignore[arg-type]
            "fedpers": request_record(NodeRequest(device_ids=(0, 5), split="train")),
        }
    )
    [reply] = grid.send_and_receive([Message(content, dst_node_id=node, message_type="train")])
    assert "update.0" in reply.content.array_records
    assert "update.5" not in reply.content.array_records
    assert reply.content.metric_records["status"]["5"] == DeviceStatus.NOT_HOSTED


def test_record_level_dp_sgd_fills_the_ledger_and_stops_at_the_budget(tmp_path: Path) -> None:
    from fedpers.privacy.dp.accounting import record_level_epsilon

    pop = _population(tmp_path)
    record = {
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
        "expected_batch_size": 4,
        "epochs": 1.0,
    }
    with EventStore.open(DevicesFolder(pop.devices_dir).store(0)) as store:
        n0 = int(store.history_indices().size)
    settings = ClientSettings(devices_dir=str(pop.devices_dir), record_epsilon_budget=None)
    # record-level epsilon depends on the device's data size: a monitoring value
    config = _config(
        tmp_path,
        pop,
        "cohort",
        "per-device",
        dp="record",
        record_level=record,
        monitoring_metrics="plaintext",
    )
    outcome = run_federation(client_grid(config, seed=2, settings=settings), config)
    assert outcome.epsilon is None  # no user-level noise: not user-level private
    with EventStore.open(DevicesFolder(pop.devices_dir).store(0)) as store:
        ledger = store.ledger()
    assert [e.round for e in ledger] == [1, 2]
    q = min(1.0, 4 / n0)
    history = [(1.0, q, max(1, round(1.0 / q)))] * 2
    assert ledger[-1].epsilon == pytest.approx(record_level_epsilon(history, ledger[-1].delta))
    with RunDB.open(tmp_path) as db:
        rounds = db.rounds()
    assert rounds[-1]["metrics"]["record_epsilon_max"] >= ledger[-1].epsilon
    # a budget between one and two rounds' epsilon: every device trains once, then refuses
    budget = (ledger[0].epsilon + ledger[1].epsilon) / 2
    tmp2 = tmp_path / "budget"
    pop2 = _population(tmp2)
    settings2 = ClientSettings(devices_dir=str(pop2.devices_dir), record_epsilon_budget=budget)
    config2 = _config(tmp2, pop2, "cohort", "per-device", dp="record", record_level=record)
    run_federation(client_grid(config2, seed=2, settings=settings2), config2)
    with RunDB.open(tmp2) as db:
        second = {(r["device_id"], r["status"], r["reason"]) for r in db.participants(2)}
    assert (0, "refused", "budget_spent") in second
