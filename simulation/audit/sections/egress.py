"""Section 4, egress: every payload a device sent, checked against the allow-list.

An update may carry only the shared arrays (:data:`SHARED_ARRAY_NAMES`) and scalar
statistics; raw events, item identifiers or a user vector are violations.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from fedpers.client.protocol import EVAL_KEYS
from fedpers.privacy.audit.report import (
    EgressEntry,
    EgressSection,
    EgressViolation,
    Verdict,
)
from fedpers.privacy.errors import ConfigError
from fedpers.simulation.audit.sections.common import verdict_of

__all__ = [
    "SHARED_ARRAY_NAMES",
    "classify_egress",
    "egress_section",
    "egress_verdict",
    "shared_array_shapes",
]

SHARED_ARRAY_NAMES = ("item_embedding", "item_bias", "feature_tower")

_DEVICE_METRICS = frozenset({"norm", "clipped", "n-examples", "loss", "indicator"})
_SUM_METRICS = frozenset(
    {"count", "clipped", "n-examples", "loss-sum", "norm-sum", "norm-max", "indicator"}
)
_NODE_METRICS = frozenset({"partition-id", "num-partitions", "device-id"})
_EVAL_METRICS = frozenset({"count", *EVAL_KEYS})
_FLOAT_DTYPES = frozenset({"float32", "float64", "float16"})
_CIPHERTEXT_DTYPES = frozenset({"uint8", "bytes", "int8"})
_DEVICE_SUFFIX = re.compile(r"^(update|metrics)\.\d+$")


def shared_array_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shared parameters a device may send, by name, from the run configuration.

    Raises:
        ConfigError: when the configuration lacks ``n_items``.
    """
    if config.get("n_items") is None:
        raise ConfigError("the run configuration has no n_items")
    n_items, dim = int(config["n_items"]), int(config.get("dim") or 32)
    shapes: dict[str, tuple[int, ...]] = {
        "item_embedding": (n_items, dim),
        "item_bias": (n_items,),
    }
    features = int(config.get("n_item_features") or 0)
    if features:
        shapes["feature_tower"] = (features, dim)
    return shapes


def _record_pattern(record: str) -> str:
    return re.sub(r"\.\d+$", ".<device>", record) if _DEVICE_SUFFIX.match(record) else record


def classify_egress(
    row: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dim: int,
    secure_aggregation: bool,
) -> str | None:
    """Why one catalogued payload entry should not have left a device (``None``: allowed).

    The allow-list: shared parameters with exactly their wire shape and a float dtype in
    ``update.*`` records; with secure aggregation, byte arrays (ciphertexts) in
    ``update.*`` records; the scalar training metrics a device reports about its update;
    the sums a cohort reports (including its device ids: participation is visible to
    the coordinator by design); status codes per device; evaluation sums; the handshake.
    Everything else is a violation; a float array shaped like a user vector and an
    integer array (which could carry item identifiers) are named as such.

    Args:
        row: an ``egress`` row (``record``, ``name``, ``kind``, ``shape``, ``dtype``).
        shapes: the allowed shared parameters (:func:`shared_array_shapes`).
        dim: the embedding dimension (the private user vector's length).
        secure_aggregation: whether ciphertexts are expected.

    Returns:
        The reason, or ``None`` when the entry is allowed.
    """
    record, name, kind = str(row.get("record")), str(row.get("name")), str(row.get("kind"))
    dtype = str(row.get("dtype"))
    raw_shape = row.get("shape")
    shape = (
        tuple(raw_shape) if isinstance(raw_shape, list | tuple) else tuple(_json_list(raw_shape))
    )
    is_update = record.startswith("update.")
    if kind == "array":
        if is_update and name in shapes and shape == shapes[name] and dtype in _FLOAT_DTYPES:
            return None
        if is_update and secure_aggregation and dtype in _CIPHERTEXT_DTYPES and len(shape) == 1:
            return None
        if shape == (dim,) and dtype in _FLOAT_DTYPES:
            return f"float array of shape ({dim},): the shape of a private user vector"
        if dtype.startswith(("int", "uint")) or dtype in ("bool",):
            return f"{dtype} array: could carry item identifiers or raw events"
        return f"array {name!r} {list(shape)} {dtype} is not a shared parameter in wire shape"
    if kind == "metric":
        scalar = len(shape) == 0
        if record.startswith("metrics.") and record != "metrics.sum":
            allowed = scalar and name in _DEVICE_METRICS
        elif record == "metrics.sum":
            allowed = (scalar and name in _SUM_METRICS) or (name == "device-ids" and dtype == "int")
        elif record == "status":
            allowed = scalar and name.isdigit()
        elif record == "eval":
            allowed = scalar and name in _EVAL_METRICS
        elif record == "node":
            allowed = scalar and name in _NODE_METRICS
        else:
            allowed = False
        return None if allowed else f"metric {record}/{name} {list(shape)} is not on the allow-list"
    if kind == "error":
        return None
    return f"{kind} entry {record}/{name}: devices send no {kind} records (could carry raw text)"


def _json_list(value: Any) -> list[int]:
    if value in (None, ""):
        return []
    parsed = json.loads(str(value))
    return [int(v) for v in parsed]


def egress_section(
    rows: Iterable[Mapping[str, Any]],
    config: Mapping[str, Any],
    secure_aggregation: bool,
    max_violations: int = 200,
) -> EgressSection:
    """Section 4: group every catalogued payload entry and check it against the allow-list.

    Args:
        rows: the run database's ``egress`` rows (streamed).
        config: the run configuration (model shape).
        secure_aggregation: whether ciphertexts are expected.
        max_violations: how many violations to list (all are counted in the verdict).
    """
    shapes = shared_array_shapes(config)
    dim = int(config.get("dim") or 32)
    groups: dict[tuple[str, str, str, str, tuple[int, ...], str], list[int]] = defaultdict(
        lambda: [0, 0]
    )
    allowed_of: dict[tuple[str, str, str, str, tuple[int, ...], str], bool] = {}
    violations: list[EgressViolation] = []
    n_violations = 0
    entries = 0
    total = 0
    protections: dict[str, int] = defaultdict(int)
    for row in rows:
        entries += 1
        protections[str(row.get("protection") or "not recorded")] += 1
        nbytes = int(row.get("bytes") or 0)
        total += nbytes
        shape = tuple(_json_list(row.get("shape")))
        record = str(row.get("record"))
        name = str(row.get("name"))
        key = (
            str(row.get("message_type")),
            _record_pattern(record),
            "<device>" if record == "status" and name.isdigit() else name,
            str(row.get("kind")),
            shape,
            str(row.get("dtype")),
        )
        reason = classify_egress({**row, "shape": list(shape)}, shapes, dim, secure_aggregation)
        group = groups[key]
        group[0] += 1
        group[1] += nbytes
        allowed_of[key] = allowed_of.get(key, True) and reason is None
        if reason is not None:
            n_violations += 1
            if len(violations) < max_violations:
                device = row.get("device_id")
                violations.append(
                    EgressViolation(
                        round=int(row.get("round") or 0),
                        device_id=None if device is None else int(device),
                        record=record,
                        name=name,
                        shape=list(shape),
                        dtype=str(row.get("dtype")),
                        reason=reason,
                    )
                )
    catalogue = [
        EgressEntry(
            message_type=k[0],
            record=k[1],
            name=k[2],
            kind=k[3],
            shape=list(k[4]),
            dtype=k[5],
            count=v[0],
            bytes_total=v[1],
            allowed=allowed_of[k],
        )
        for k, v in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
    ]
    checks = [
        "Arrays: only the shared parameters ("
        + ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
        + ") in float dtypes, inside update records"
        + ("; with secure aggregation, byte arrays (ciphertexts)." if secure_aggregation else "."),
        f"A float array of shape [{dim}] would be a private user vector; any integer array "
        "could carry item identifiers or raw events: both are violations.",
        "Metrics: only scalar training statistics (norm, clipped, n-examples, loss, "
        "indicator), cohort sums and their device ids, status codes, evaluation sums and "
        "the handshake.",
        "No configuration or text record may come from a device.",
    ]
    checks.append(_protection_line(protections))
    if n_violations > len(violations):
        checks.append(f"{n_violations} violations in all; the first {len(violations)} are listed.")
    return EgressSection(
        payload_entries=entries,
        total_bytes=total,
        catalogue=catalogue,
        allowed_arrays=[
            {"name": n, "shape": list(s), "dtype": "float32"} for n, s in shapes.items()
        ],
        violations=violations,
        checks=checks,
    )


def _protection_line(protections: Mapping[str, int]) -> str:
    """What protected the recorded entries (run.db ``egress.protection``), in one line."""
    counts = ", ".join(f"{name} {n}" for name, n in sorted(protections.items()))
    line = f"Protection of the recorded entries (the egress catalogue): {counts or 'none'}."
    if protections.get("monitoring_plaintext"):
        line += (
            " The run set monitoring_metrics = plaintext: the monitoring_plaintext entries "
            "are per-device statistics sent in plaintext, NOT covered by the DP guarantee."
        )
    return line


def egress_verdict(e: EgressSection) -> Verdict:
    """Whether no payload carried raw events, item identifiers or a user vector."""
    verdict = verdict_of("egress_clean", "No raw events, item ids or user vectors left a device")
    if e["payload_entries"] == 0:
        return verdict("fail", "The run recorded no egress catalogue to check.")
    n = len(e["violations"])
    if n:
        first = e["violations"][0]
        return verdict(
            "fail",
            f"{n} payload entr{'y' if n == 1 else 'ies'} broke the allow-list, e.g. round "
            f"{first['round']} device {first['device_id']}: {first['reason']}.",
        )
    return verdict(
        "pass",
        f"All {e['payload_entries']} recorded payload entries ({e['total_bytes']} bytes) "
        "were shared-parameter updates or scalar statistics on the allow-list.",
    )
