"""The egress catalogue: what it lists as protected, and what it refuses to list."""

from __future__ import annotations

import pytest

from fedpers.client.egress import PROTECTED, PROTECTIONS, protection_of


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "update.3", "ckks", "array", "uint8", True), "secure_sum"),
        (("train", "update.sum", "ckks", "array", "uint8", True), "secure_sum"),
        (("train", "update.3", "item_bias", "array", "float32", False), "trusted_coordinator"),
        (("train", "metrics.3", "indicator", "metric", "float", False), "trusted_coordinator"),
        (("train", "metrics.sum", "device-ids", "metric", "int", True), "participation"),
        (("train", "metrics.sum", "count", "metric", "int", True), "participation"),
        (("train", "status", "5", "metric", "int", True), "participation"),
        (("query", "node", "partition-id", "metric", "int", False), "participation"),
        (("evaluate", "eval", "hr10_sampled", "metric", "float", True), "evaluation"),
        (("train", "metrics.3", "loss", "metric", "float", True), "monitoring_plaintext"),
        (("train", "metrics.sum", "norm-max", "metric", "float", False), "monitoring_plaintext"),
        # adaptive clipping's bit outside the ciphertext is not protected by secure agg.
        (("train", "metrics.3", "indicator", "metric", "float", True), "monitoring_plaintext"),
        (("train", "node", "x", "error", "str", True), "error"),
    ],
)
def test_listed_entries(args: tuple[str, str, str, str, str, bool], expected: str) -> None:
    assert protection_of(*args) == expected
    assert expected in PROTECTIONS


@pytest.mark.parametrize(
    "args",
    [
        # a plaintext update when the round asked for secure aggregation
        ("train", "update.3", "item_bias", "array", "float32", True),
        # integer arrays could carry item ids; ciphertext bytes without secure aggregation
        ("train", "update.3", "item_bias", "array", "int64", False),
        ("train", "update.3", "ckks", "array", "uint8", False),
        # a user-vector-like record, free text, unknown metrics
        ("train", "user.3", "vector", "array", "float32", False),
        ("train", "fedpers", "note", "config", "str", False),
        ("train", "metrics.3", "history", "metric", "float", False),
        ("evaluate", "eval", "items", "metric", "int", False),
        ("train", "metrics.x", "loss", "metric", "float", False),
    ],
)
def test_unlisted_entries_are_not_protected(args: tuple[str, str, str, str, str, bool]) -> None:
    assert protection_of(*args) is None


def test_monitoring_and_evaluation_are_not_protected() -> None:
    assert "monitoring_plaintext" not in PROTECTED and "evaluation" not in PROTECTED
    assert set(PROTECTED) <= set(PROTECTIONS)
