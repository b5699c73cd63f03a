"""The typed wire vocabulary: one encode/decode per record, exact keys, named errors."""

from __future__ import annotations

import math

import pytest

from fedpers.client.protocol import (
    DeviceMetrics,
    DeviceStatistics,
    DeviceStatus,
    EvaluationSums,
    NodeInfo,
    NodeRequest,
    ReplyMode,
    SumMetrics,
    SumStatistics,
    decode_status,
    encode_statuses,
)
from fedpers.privacy.errors import DataError


def test_device_metrics_keys_and_round_trip() -> None:
    assert DeviceMetrics().encode() == {}
    assert DeviceMetrics(indicator=0.5).encode() == {"indicator": 0.5}
    full = DeviceMetrics(0.25, DeviceStatistics(1.5, True, 12, 0.7, 2.0))
    encoded = full.encode()
    assert list(encoded) == ["norm", "clipped", "n-examples", "loss", "record-epsilon", "indicator"]
    assert encoded["clipped"] == 1 and isinstance(encoded["n-examples"], int)
    assert DeviceMetrics.decode(encoded) == full
    # a non-finite record-level epsilon is not sent
    assert "record-epsilon" not in DeviceStatistics(1.0, False, 1, 0.1, math.inf).encode()


def test_sum_metrics_keys_and_round_trip() -> None:
    stats = SumStatistics(2, 30, 1.4, 3.0, 1.8, None)
    metrics = SumMetrics(3, (4, 5, 6), indicator=1.0, statistics=stats)
    encoded = metrics.encode()
    assert list(encoded) == [
        "count",
        "device-ids",
        "clipped",
        "n-examples",
        "loss-sum",
        "norm-sum",
        "norm-max",
        "indicator",
    ]
    assert encoded["device-ids"] == [4, 5, 6]
    assert SumMetrics.decode(encoded) == metrics
    assert SumMetrics.decode({"count": 1, "device-ids": [2]}) == SumMetrics(1, (2,))


@pytest.mark.parametrize(
    "values",
    [
        {"norm": 1.0},  # statistics without clipped, n-examples, loss
        {"norm": [1.0], "clipped": 0, "n-examples": 1, "loss": 0.1},
        {"norm": 1.0, "clipped": 3, "n-examples": 1, "loss": 0.1},
        {"norm": 1.0, "clipped": 0, "n-examples": 1.5, "loss": 0.1},
        {"indicator": "x"},
    ],
)
def test_malformed_device_metrics_raise_data_error(values: dict[str, object]) -> None:
    with pytest.raises(DataError):
        DeviceMetrics.decode(values)


@pytest.mark.parametrize(
    "values",
    [{"device-ids": [1]}, {"count": 1}, {"count": 1, "device-ids": [1.5]}, {"count": "1"}],
)
def test_malformed_sum_metrics_raise_data_error(values: dict[str, object]) -> None:
    with pytest.raises(DataError):
        SumMetrics.decode(values)


def test_statuses_evaluation_and_handshake() -> None:
    encoded = encode_statuses({3: DeviceStatus.GPC, 9: DeviceStatus.FAILED})
    assert encoded == {"3": 2, "9": 7}
    assert decode_status("3", 2) == (3, DeviceStatus.GPC)
    for key, code in (("x", 2), ("3", 99), ("3", [2])):
        with pytest.raises(DataError):
            decode_status(key, code)
    sums = {"hr10_sampled": 1.0, "ndcg10_sampled": 0.5, "hr10_full": 0.0, "ndcg10_full": 0.0}
    evaluation = EvaluationSums(2, sums)
    assert evaluation.encode() == {"count": 2, **sums}
    assert EvaluationSums.decode(evaluation.encode()) == evaluation and evaluation.plausible
    assert EvaluationSums(2, {**sums, "hr10_full": math.nan}).encode().keys() == {
        "count",
        "hr10_sampled",
        "ndcg10_sampled",
        "ndcg10_full",
    }
    with pytest.raises(DataError):
        EvaluationSums.decode({"count": 2})
    info = NodeInfo(1, 3, -1)
    assert info.encode() == {"partition-id": 1, "num-partitions": 3, "device-id": -1}
    assert NodeInfo.decode(info.encode()) == info
    with pytest.raises(DataError):
        NodeInfo.decode({"partition-id": 1})


def test_node_request_keys_and_round_trip() -> None:
    request = NodeRequest(
        device_ids=(1, 2),
        reply=ReplyMode.SUM,
        split="train",
        record_level={"noise_multiplier": 1.1, "max_grad_norm": None},
        secure=("ckks", "abc"),
        monitoring=True,
    )
    encoded = request.encode()
    assert encoded == {
        "device-ids": [1, 2],
        "reply": "sum",
        "split": "train",
        "secure-agg": "ckks",
        "key-id": "abc",
        "monitoring": "plaintext",
        "record.noise_multiplier": 1.1,
    }
    decoded = NodeRequest.decode(encoded)
    assert decoded.record_level == {"noise_multiplier": 1.1}
    assert (decoded.device_ids, decoded.reply, decoded.secure) == (
        (1, 2),
        ReplyMode.SUM,
        request.secure,
    )
    assert NodeRequest.decode(None) == NodeRequest()
    with pytest.raises(DataError):
        NodeRequest.decode({"reply": "everything"})
