"""Report sections from recorded rows: egress allow-list, secure aggregation, consent, epsilon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedpers.privacy.dp.accounting import RoundEvent, epsilon_from_history
from fedpers.simulation.audit.sections import (
    classify_egress,
    consent_section,
    egress_section,
    egress_verdict,
    guarantee_section,
    round_events,
    secure_aggregation_section,
    secure_aggregation_verdict,
    shared_array_shapes,
)
from fedpers.simulation.audit.sources import DeviceRecord, RunSources

CONFIG = {"n_items": 50, "dim": 8, "n_item_features": 0}
SHAPES = shared_array_shapes(CONFIG)


def _row(record: str, name: str, kind: str, shape: list[int], dtype: str) -> dict[str, Any]:
    return {
        "record": record,
        "name": name,
        "kind": kind,
        "shape": shape,
        "dtype": dtype,
        "message_type": "train",
        "round": 1,
        "device_id": 3,
        "bytes": 8,
    }


@pytest.mark.parametrize(
    ("row", "secure", "allowed"),
    [
        (_row("update.3", "item_embedding", "array", [50, 8], "float32"), False, True),
        (_row("update.sum", "item_bias", "array", [50], "float32"), False, True),
        (_row("update.3", "item_bias", "array", [49], "float32"), False, False),
        (_row("update.3", "user_vector", "array", [8], "float32"), False, False),
        (_row("update.3", "history", "array", [17], "int64"), False, False),
        (_row("update.3", "ciphertext", "array", [4096], "uint8"), True, True),
        (_row("update.3", "ciphertext", "array", [4096], "uint8"), False, False),
        (_row("metrics.3", "norm", "metric", [], "float"), False, True),
        (_row("metrics.3", "last_item", "metric", [], "int"), False, False),
        (_row("metrics.3", "norm", "metric", [3], "float"), False, False),
        (_row("metrics.sum", "device-ids", "metric", [12], "int"), False, True),
        (_row("metrics.3", "device-ids", "metric", [12], "int"), False, False),
        (_row("status", "17", "metric", [], "int"), False, True),
        (_row("eval", "hr10_sampled", "metric", [], "float"), False, True),
        (_row("node", "partition-id", "metric", [], "int"), False, True),
        (_row("notes", "text", "config", [], "str"), False, False),
    ],
)
def test_egress_allow_list(row: dict[str, Any], secure: bool, allowed: bool) -> None:
    reason = classify_egress(row, SHAPES, 8, secure)
    assert (reason is None) is allowed, reason


def test_egress_violation_names_user_vectors_and_item_ids() -> None:
    vec = classify_egress(_row("update.3", "u", "array", [8], "float32"), SHAPES, 8, False)
    ids = classify_egress(_row("update.3", "h", "array", [5], "int64"), SHAPES, 8, False)
    assert vec is not None and "user vector" in vec
    assert ids is not None and "item identifiers" in ids


def test_egress_section_groups_devices_and_counts_violations() -> None:
    rows = [
        {
            **_row(f"update.{d}", "item_embedding", "array", [50, 8], "float32"),
            "device_id": d,
            "shape": "[50, 8]",
            "bytes": 1600,
        }
        for d in range(5)
    ]
    rows.append({**_row("update.2", "uv", "array", [8], "float32"), "shape": "[8]", "bytes": 32})
    section = egress_section(rows, CONFIG, secure_aggregation=False)
    assert section["payload_entries"] == 6 and section["total_bytes"] == 5 * 1600 + 32
    grouped = {(c["record"], c["name"]): c for c in section["catalogue"]}
    assert grouped[("update.<device>", "item_embedding")]["count"] == 5
    assert not grouped[("update.<device>", "uv")]["allowed"]
    assert len(section["violations"]) == 1 and section["violations"][0]["device_id"] == 3
    assert egress_verdict(section)["status"] == "fail"
    assert egress_verdict(egress_section(rows[:5], CONFIG, False))["status"] == "pass"
    assert egress_verdict(egress_section([], CONFIG, False))["status"] == "fail"


def _sources(
    privacy: dict[str, Any],
    rounds: list[dict[str, Any]] | None = None,
    participants: list[dict[str, Any]] | None = None,
    devices: dict[int, DeviceRecord] | None = None,
) -> RunSources:
    return RunSources(
        run_dir=Path("run"),
        config={"num_devices": 3, **CONFIG},
        stored_config={},
        privacy=privacy,
        rounds=rounds or [],
        participants=participants or [],
        models=[],
        final_arrays=None,
        final_round=None,
        checkpoint_state={},
        devices_dir=Path("devices") if devices else None,
        devices=devices or {},
        device_problems={},
    )


def test_secure_aggregation_section_reads_the_recorded_description() -> None:
    desc = {
        "scheme": "ckks",
        "security_bits": 128,
        "bytes_per_update": 334000.0,
        "public_context_is_private": False,
        "key_custody": {"coordinator": "public context only", "key_holder": "secret context"},
    }
    section = secure_aggregation_section(_sources({"secure_aggregation": "he", "secagg": desc}))
    assert section["enabled"] and section["scheme"] == "ckks" and section["security_bits"] == 128
    assert section["coordinator_held_secret_key"] is False
    assert {k["component"] for k in section["key_custody"]} == {"coordinator", "key_holder"}
    assert secure_aggregation_verdict(section)["status"] == "pass"
    leaked = secure_aggregation_section(
        _sources(
            {"secure_aggregation": "he", "secagg": {**desc, "public_context_is_private": True}}
        )
    )
    assert secure_aggregation_verdict(leaked)["status"] == "fail"
    unrecorded = secure_aggregation_section(_sources({"secure_aggregation": "he"}))
    assert secure_aggregation_verdict(unrecorded)["status"] == "fail"
    off = secure_aggregation_section(_sources({"secure_aggregation": "none"}))
    assert secure_aggregation_verdict(off)["status"] == "not_applicable"


def test_round_events_follow_the_recorded_sampling() -> None:
    rounds = [
        {"round": 1, "status": "completed", "noise_multiplier": 1.2, "sample_rate": 0.1},
        {"round": 2, "status": "skipped", "noise_multiplier": 1.2, "sample_rate": 0.1},
        {"round": 3, "status": "completed", "noise_multiplier": 1.2, "sample_rate": 0.1},
    ]
    events = round_events(rounds, {"sampling": "poisson"})
    assert events == [RoundEvent.poisson(1.2, 0.1), RoundEvent.poisson(1.2, 0.1)]
    fixed = round_events(rounds, {"sampling": "fixed", "num_devices": 100, "cohort_size": 10})
    assert fixed[0] == RoundEvent.fixed(1.2, 100, 10)


def test_guarantee_flags_a_doctored_epsilon() -> None:
    delta = 1e-4
    eps = epsilon_from_history([RoundEvent.poisson(1.0, 0.5)] * 2, delta).epsilon
    rounds = [
        {
            "round": r,
            "status": "completed",
            "noise_multiplier": 1.0,
            "sample_rate": 0.5,
            "epsilon": eps * (1.5 if r == 2 else 1.0),
            "clip_norm": 1.0,
            "sampled": 2,
            "clipped_fraction": 0.5,
        }
        for r in (1, 2)
    ]
    privacy = {
        "user_level": True,
        "unit": "user",
        "noise_multiplier": 1.0,
        "delta": delta,
        "accountant": "rdp",
        "sampling": "poisson",
        "sample_rate": 0.5,
        "clipping": "fixed",
        "target_epsilon": 100.0,
    }
    g = guarantee_section(_sources(privacy, rounds))
    assert g["epsilon"] == pytest.approx(eps * 1.5)
    assert not g["cross_checks"][0]["agrees"]
    honest = [{**r, "epsilon": eps if r["round"] == 2 else r["epsilon"]} for r in rounds]
    g2 = guarantee_section(_sources(privacy, honest))
    assert g2["cross_checks"][0]["agrees"]


def _device(device_id: int, log: list[tuple[float, frozenset[int], bool]]) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        path=Path(f"d{device_id}.db"),
        items=np.arange(3),
        consent_log=log,
        consent=(log[-1][1], log[-1][2]) if log else None,
        ledger_epsilon=None,
        user_vector=None,
        erased_at=None,
        erasure_evidence="not erased",
    )


def test_consent_is_replayed_at_round_time() -> None:
    train = frozenset({1, 5, 6, 10})
    devices = {
        0: _device(0, [(0.0, train, False)]),
        1: _device(1, [(0.0, train, False), (150.0, frozenset({1}), False)]),  # withdraws
        2: _device(2, [(0.0, frozenset({1}), False), (205.0, train, False)]),  # grants mid-round
    }
    rounds = [
        {"round": 1, "started_at": 100.0, "wall_seconds": 10.0},
        {"round": 2, "started_at": 200.0, "wall_seconds": 10.0},
    ]
    participants = [
        {"round": 1, "device_id": 0, "status": "accepted"},
        {"round": 1, "device_id": 1, "status": "accepted"},
        {"round": 2, "device_id": 0, "status": "accepted"},
        {"round": 2, "device_id": 1, "status": "accepted"},  # after withdrawal: violation
        {"round": 2, "device_id": 2, "status": "accepted"},  # granted during the round: fine
    ]
    section = consent_section(_sources({}, rounds, participants, devices))
    assert [r["consenting"] for r in section["rounds"]] == [2, 2]
    assert [r["participants_without_consent"] for r in section["rounds"]] == [0, 1]
    assert section["non_consenting_participations"] == 1
