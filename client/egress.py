"""The egress catalogue: every value a device may send, and what protects it.

One table, used by the coordinator when it catalogues what it received (the run
database's ``egress`` table, column ``protection``), by the audit's egress section and by
the tests that inspect real Flower messages. An entry that :func:`protection_of` does not
know is not on the catalogue: it should never have left a device.

==========================  ====================================================================
protection                  meaning
==========================  ====================================================================
``secure_sum``              CKKS ciphertext; the coordinator only ever sees the key holder's
                            decryption of the *noised sum* of at least ``min_contributions``
                            devices (clipped update + noise share, pipeline steps 3-7)
``trusted_coordinator``     plaintext clipped update (and adaptive clipping's noised
                            indicator) without secure aggregation: the coordinator sees it
                            and is trusted to add the central noise; the *published* model is
                            DP, the coordinator is not kept from the individual update
``participation``           who took part and why not (device ids of a sum, its count, status
                            codes, the handshake): visible by design (docs/threat-model.md)
``evaluation``              held-out evaluation sums (``count`` and the sums of the four
                            ranking metrics) per node; per device in node mode; not noised;
                            only sent when the coordinator asks for an evaluation
``monitoring_plaintext``    per-device (or per-node) training statistics in plaintext: the
                            update norm before clipping, clipped or not, examples, loss,
                            record-level epsilon, and with secure aggregation adaptive
                            clipping's indicator. **Not protected**; only sent when the run
                            was started with ``monitoring_metrics = "plaintext"``
``error``                   a Flower error reply (its reason text)
==========================  ====================================================================
"""

from __future__ import annotations

import re
from typing import Final

from fedpers.client.protocol import EVAL_KEYS, MONITORING_DEVICE_METRICS, MONITORING_SUM_METRICS

__all__ = [
    "PROTECTED",
    "PROTECTIONS",
    "protection_of",
]

PROTECTIONS: Final = (
    "secure_sum",
    "trusted_coordinator",
    "participation",
    "evaluation",
    "monitoring_plaintext",
    "error",
)
"""Every protection class of the catalogue (see the module docstring)."""

PROTECTED: Final = frozenset({"secure_sum", "trusted_coordinator", "participation", "error"})
"""Classes a default (non-monitoring) training reply may carry; ``secure_sum`` and
``participation`` only, plus errors, with secure aggregation."""

_EVAL_NAMES: Final = frozenset({"count", *EVAL_KEYS})
_NODE_NAMES: Final = frozenset({"partition-id", "num-partitions", "device-id"})
_DEVICE_RECORD = re.compile(r"^(update|metrics)\.\d+$")


def protection_of(
    message_type: str, record: str, name: str, kind: str, dtype: str, secure: bool
) -> str | None:
    """The catalogue's protection of one received entry, ``None`` when it is not listed.

    Args:
        message_type: ``train``, ``evaluate``, ``query`` (the handshake).
        record: the record's name (``update.<device>``, ``metrics.sum``, ``status``, ...).
        name: the entry's name inside the record.
        kind: ``array``, ``metric``, ``config`` or ``error``.
        dtype: the entry's dtype (``uint8`` for a ciphertext).
        secure: whether the round asked for secure aggregation.

    Returns:
        One of :data:`PROTECTIONS`, or ``None``.

    Example:
        >>> protection_of("train", "update.7", "ckks", "array", "uint8", True)
        'secure_sum'
        >>> protection_of("train", "metrics.7", "loss", "metric", "float", True)
        'monitoring_plaintext'
    """
    if kind == "error":
        return "error"
    per_device = bool(_DEVICE_RECORD.match(record))
    if kind == "array" and (per_device or record == "update.sum") and record.startswith("update"):
        if secure:
            return "secure_sum" if dtype == "uint8" and name == "ckks" else None
        return "trusted_coordinator" if dtype.startswith("float") else None
    if kind != "metric":
        return None
    if record == "status" and name.isdigit():
        return "participation"
    if message_type == "query" and record == "node":
        return "participation" if name in _NODE_NAMES else None
    if message_type == "evaluate" and record == "eval":
        return "evaluation" if name in _EVAL_NAMES else None
    if record == "metrics.sum":
        if name in ("count", "device-ids"):
            return "participation"
        if name == "indicator":
            return "monitoring_plaintext" if secure else "trusted_coordinator"
        return "monitoring_plaintext" if name in MONITORING_SUM_METRICS else None
    if per_device and record.startswith("metrics."):
        if name == "indicator":
            return "monitoring_plaintext" if secure else "trusted_coordinator"
        return "monitoring_plaintext" if name in MONITORING_DEVICE_METRICS else None
    return None
