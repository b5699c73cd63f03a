"""Faults: failing and slow devices, malformed updates, duplicates.

Every scenario runs the real ClientApp and the real coordinator over an in-process grid
whose ``intercept`` hook corrupts, drops or repeats replies. The round completes (or is
skipped when too few updates remain, and says so), every drop has its reason in the run
database, the model stays finite, and the accountant counts exactly the rounds that were
applied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from local_federation import client_grid, federation_config, synthetic_split
from local_grid import Intercept

from fedpers.privacy.dp.accounting import epsilon_for
from fedpers.server.app import FederationOutcome, run_federation
from fedpers.server.checkpoint import load_checkpoint
from fedpers.server.config import FederationConfig
from fedpers.server.rundb import RunDB
from fedpers.simulation.federation.population import DevicePopulation, prepare_devices

N = 20
ROUNDS = 2


@pytest.fixture(scope="module")
def dataset():  # type: ignore[no-untyped-def]
    return synthetic_split(N, 30, seed=4)


def _run(
    tmp: Path,
    dataset,  # type: ignore[no-untyped-def]
    *,
    mode: str = "cohort",
    reply: str = "per-device",
    intercept: Intercept | None = None,
    mods: tuple[Callable[..., Message], ...] = (),
    **kw: object,
) -> tuple[FederationOutcome, FederationConfig, DevicePopulation]:
    data, split = dataset
    pop = prepare_devices(tmp, data, split, seed=4)
    options: dict[str, object] = {
        "dp": "user",
        "noise_multiplier": 1.0,
        "clip_norm": 0.5,
    }
    options.update(kw)
    config = federation_config(
        tmp,
        pop,
        rounds=ROUNDS,
        mode=mode,
        reply=reply,
        num_nodes=N if mode == "node" else 4,
        **options,
    )
    grid = client_grid(config, seed=5, intercept=intercept, mods=mods)
    return run_federation(grid, config), config, pop


def _rows(tmp: Path) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    with RunDB.open(tmp) as db:
        return db.rounds(), db.participants()


def _assert_finite(outcome: FederationOutcome) -> None:
    assert all(np.isfinite(a).all() for a in outcome.arrays)


def _assert_accounted(outcome: FederationOutcome, config: FederationConfig, applied: int) -> None:
    """The reported epsilon is exactly that of the rounds that were applied."""
    assert config.noise_multiplier is not None
    if applied == 0:
        assert outcome.epsilon == 0.0
        return
    expected = epsilon_for(config.noise_multiplier, 1.0, applied, config.resolved_delta).epsilon
    assert outcome.epsilon == pytest.approx(expected, rel=1e-9)
    ledger = load_checkpoint(Path(config.run_dir)).state["ledger"]
    assert sum(e["count"] for e in ledger["accountant"]["history"]) == applied


def _failing_mod(fail: set[int]) -> Callable[..., Message]:
    def mod(message: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        if (
            message.metadata.message_type == "train"
            and int(context.node_config["partition-id"]) in fail
        ):
            raise RuntimeError("device crashed mid-round")
        return call_next(message, context)

    return mod


def test_thirty_percent_of_devices_fail_mid_round(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    fail = {1, 4, 7, 10, 13, 16}  # 6 of 20 = 30 %
    outcome, config, _ = _run(tmp_path, dataset, mode="node", mods=(_failing_mod(fail),))
    rounds, parts = _rows(tmp_path)
    assert [r["status"] for r in rounds] == ["completed"] * ROUNDS
    assert all(r["participants"] == N - len(fail) and r["dropped"] == len(fail) for r in rounds)
    failed = {(p["device_id"], p["status"]) for p in parts if p["status"] != "accepted"}
    assert failed == {(d, "failed") for d in fail}
    assert all(p["reason"].startswith("node_error") for p in parts if p["status"] == "failed")
    _assert_finite(outcome)
    _assert_accounted(outcome, config, ROUNDS)


def test_too_few_remaining_skips_the_round_and_says_so(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    fail = {1, 4, 7, 10, 13, 16}
    outcome, config, _ = _run(
        tmp_path, dataset, mode="node", mods=(_failing_mod(fail),), min_participants=15
    )
    rounds, _ = _rows(tmp_path)
    assert [r["status"] for r in rounds] == ["skipped"] * ROUNDS
    assert all("too_few_participants (14 < 15)" in r["reason"] for r in rounds)
    assert all("not accounted" in r["reason"] for r in rounds)
    assert outcome.rounds_completed == 0
    initial = load_checkpoint(tmp_path).arrays
    for a, b in zip(outcome.arrays, initial, strict=True):
        np.testing.assert_array_equal(a, b)  # nothing applied
    _assert_accounted(outcome, config, 0)


def test_device_slower_than_the_round_timeout(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    slow_partition = 3

    def intercept(request: Message, reply: Message) -> Message | None:
        node = reply.metadata.src_node_id
        if request.metadata.message_type == "train" and node == slow_nodes[0]:
            return None  # the reply never arrives before the round's deadline
        return reply

    slow_nodes: list[int] = []

    def mod(message: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        if int(context.node_config["partition-id"]) == slow_partition and not slow_nodes:
            slow_nodes.append(context.node_id)
        return call_next(message, context)

    outcome, config, _ = _run(tmp_path, dataset, mode="node", intercept=intercept, mods=(mod,))
    rounds, parts = _rows(tmp_path)
    assert [r["status"] for r in rounds] == ["completed"] * ROUNDS
    late = [p for p in parts if p["status"] == "timeout"]
    assert [(p["device_id"], p["reason"]) for p in late] == [
        (slow_partition, "no_reply_before_timeout")
    ] * ROUNDS
    _assert_finite(outcome)
    _assert_accounted(outcome, config, ROUNDS)


def _corrupt(device: int, how: str) -> Intercept:
    def intercept(request: Message, reply: Message) -> Message | list[Message] | None:
        if request.metadata.message_type != "train" or reply.has_error():
            return reply
        content = reply.content
        key = f"update.{device}"
        if how == "duplicate":
            return [reply, reply]
        if key not in content.array_records:
            return reply
        record = content.array_records[key]
        arrays = {k: record[k].numpy() for k in record}
        first = next(iter(arrays))
        if how == "nan":
            arrays[first] = arrays[first].copy()
            arrays[first].flat[0] = np.nan
        elif how == "inf":
            arrays[first] = arrays[first].copy()
            arrays[first].flat[-1] = np.inf
        elif how == "shape":
            arrays[first] = np.zeros((3, 3), np.float32)
        elif how == "dtype":
            arrays[first] = arrays[first].astype(np.float64)
        elif how == "norm":
            arrays[first] = np.full_like(arrays[first], 1e9 / math.sqrt(arrays[first].size))
        content.array_records[key] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return Message(RecordDict(dict(content.items())), reply_to=request)

    return intercept


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("nan", "non_finite"),
        ("inf", "non_finite"),
        ("shape", "wrong_shape"),
        ("dtype", "wrong_dtype"),
        ("norm", "norm_exceeds_bound"),
    ],
)
def test_malformed_updates_are_dropped_with_a_reason(
    tmp_path: Path, dataset, how: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    outcome, config, _ = _run(tmp_path, dataset, intercept=_corrupt(5, how))
    rounds, parts = _rows(tmp_path)
    assert [r["status"] for r in rounds] == ["completed"] * ROUNDS
    bad = [(p["device_id"], p["status"], p["reason"]) for p in parts if p["status"] != "accepted"]
    assert bad == [(5, "dropped", reason)] * ROUNDS
    assert all(r["participants"] == N - 1 for r in rounds)
    _assert_finite(outcome)
    _assert_accounted(outcome, config, ROUNDS)


def test_norm_1e9_without_clipping_is_dropped(tmp_path: Path, dataset) -> None:  # type: ignore[no-untyped-def]
    outcome, _, _ = _run(
        tmp_path,
        dataset,
        intercept=_corrupt(2, "norm"),
        dp="none",
        noise_multiplier=None,
        clip_norm=0.0,
    )
    _, parts = _rows(tmp_path)
    assert {(p["device_id"], p["reason"]) for p in parts if p["status"] != "accepted"} == {
        (2, "norm_exceeds_bound")
    }
    assert outcome.epsilon is None
    _assert_finite(outcome)


@pytest.mark.parametrize("reply", ["per-device", "sum"])
def test_duplicated_replies_count_once(tmp_path: Path, dataset, reply: str) -> None:  # type: ignore[no-untyped-def]
    outcome, config, _ = _run(tmp_path, dataset, reply=reply, intercept=_corrupt(0, "duplicate"))
    rounds, parts = _rows(tmp_path)
    assert all(r["participants"] == N and r["dropped"] == 0 for r in rounds)
    dups = [p for p in parts if p["status"] == "duplicate"]
    assert len(dups) == N * ROUNDS and {p["reason"] for p in dups} == {"duplicate"}
    # the sum counted each device once: same model as a run without duplicates
    clean, _, _ = _run(tmp_path / "clean", dataset, reply=reply)
    for a, b in zip(outcome.arrays, clean.arrays, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    _assert_accounted(outcome, config, ROUNDS)
