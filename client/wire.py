"""The wire vocabulary between the coordinator and the device-side ClientApp.

Flower records are the only things that cross the wire (``flwr.app`` ``RecordDict``).
This module names them once; :mod:`fedpers.client.app` builds replies with these
helpers and :mod:`fedpers.server.strategy` parses them, so both sides agree on one
schema.

Coordinator -> node (``train`` and ``evaluate`` messages):

=====================  ============  =====================================================
record                 type          content
=====================  ============  =====================================================
``arrays``             ArrayRecord   the global shared parameters, wire order
``config``             ConfigRecord  the round instructions (``RoundInstructions``)
``fedpers``            ConfigRecord  ``device-ids`` (the sampled devices this node hosts),
                                     ``reply`` (``per-device`` or ``sum``), ``split``
=====================  ============  =====================================================

Node -> coordinator (``train`` reply); nothing else may be in it:

=========================  ============  =================================================
record                     type          content
=========================  ============  =================================================
``update.<device>``        ArrayRecord   one device's clipped (+ noise share) delta
``metrics.<device>``       MetricRecord  ``indicator`` (adaptive clipping); only with
                                         ``monitoring = "plaintext"`` also ``norm``,
                                         ``clipped``, ``n-examples``, ``loss``,
                                         ``record-epsilon`` (record-level DP-SGD)
``update.sum``             ArrayRecord   the sum of the node's devices' deltas (sum reply)
``metrics.sum``            MetricRecord  ``count``, ``device-ids``, ``indicator``; only
                                         with ``monitoring = "plaintext"`` also
                                         ``clipped``, ``n-examples``, ``loss-sum``,
                                         ``norm-sum``, ``norm-max``,
                                         ``record-epsilon-max``
``status``                 MetricRecord  ``<device>`` -> :class:`DeviceStatus` code for
                                         every device that sent no update (refused/failed)
=========================  ============  =================================================

With secure aggregation (``fedpers`` record ``secure-agg = "ckks"`` and ``key-id``), an
``update.<device>`` or ``update.sum`` record holds a single uint8 array named
:data:`CIPHERTEXT` instead of the shared parameters: the bytes of a
:class:`~fedpers.privacy.secagg.EncryptedUpdate` of the flattened update (wire order,
:func:`flatten`).

``evaluate`` reply: one MetricRecord ``eval`` with ``count`` and the *sums* of the
per-device metrics (``hr10_sampled`` ...), plus ``status`` as above. Sums rather than
means keep the coordinator's aggregation exact whatever the node layout.

Every value a device reports is numeric and listed, with what protects it, in the egress
catalogue (:mod:`fedpers.client.egress`). Which devices took part is visible to the
coordinator (see docs/threat-model.md); per-device training statistics only with the
explicit monitoring flag; events, history item identifiers and private user vectors never.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedpers.privacy.errors import DataError

__all__ = [
    "ARRAYS",
    "CIPHERTEXT",
    "CONFIG",
    "EVAL",
    "EVAL_KEYS",
    "FEDERATION",
    "KEY_ID",
    "MONITORING",
    "MONITORING_PLAINTEXT",
    "RECORD_PREFIX",
    "SECURE_AGG",
    "STATUS",
    "SUM",
    "DeviceStatus",
    "ReplyMode",
    "array_record",
    "arrays_of",
    "ciphertext_of",
    "ciphertext_record",
    "device_ids_of",
    "federation_record",
    "flatten",
    "metrics_key",
    "monitoring_of",
    "parse_device_key",
    "record_level_of",
    "secure_agg_of",
    "status_record",
    "unflatten",
    "update_key",
]

ARRAYS = "arrays"
CONFIG = "config"
FEDERATION = "fedpers"
STATUS = "status"
EVAL = "eval"
SUM = "sum"
CIPHERTEXT = "ckks"
"""Name of the one uint8 array of an encrypted update record."""
SECURE_AGG = "secure-agg"
KEY_ID = "key-id"
MONITORING = "monitoring"
MONITORING_PLAINTEXT = "plaintext"
EVAL_KEYS = ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")
"""Per-device evaluation metrics a node sums (the project-wide metric names)."""

RECORD_PREFIX = "record."
_UPDATE = "update."
_METRICS = "metrics."


class ReplyMode(enum.StrEnum):
    """How a node returns its devices' updates."""

    PER_DEVICE = "per-device"
    SUM = "sum"


CIPHERTEXT = "ckks"
"""Name of the one uint8 array of an encrypted update record."""
SECURE_AGG = "secure-agg"
KEY_ID = "key-id"


class DeviceStatus(enum.IntEnum):
    """Why a sampled device sent no update (numeric, so that it fits a MetricRecord)."""

    NO_CONSENT = 1
    """P10 (develop and improve services) is not granted."""
    GPC = 2
    """The Global Privacy Control signal is set: nothing derived from behaviour is sent."""
    BUDGET_SPENT = 3
    """The device's record-level privacy budget is spent."""
    NO_DATA = 4
    """The device has no training interactions."""
    NO_STORE = 5
    """The device's store is missing, corrupted or unreadable."""
    NOT_HOSTED = 6
    """The node does not host this device."""
    FAILED = 7
    """Local training failed on the device."""
    ROUND_ALREADY_SPENT = 8
    """The device already spent record-level budget on this round (a re-run after a
    coordinator crash): it does not train the same round twice."""

    @property
    def reason(self) -> str:
        """The reason string the run database records."""
        return _REASONS[self]

    @property
    def is_refusal(self) -> bool:
        """Whether the device declined (consent, GPC, budget) rather than failed."""
        return self in (
            DeviceStatus.NO_CONSENT,
            DeviceStatus.GPC,
            DeviceStatus.BUDGET_SPENT,
            DeviceStatus.ROUND_ALREADY_SPENT,
        )


_REASONS = {
    DeviceStatus.NO_CONSENT: "no_p10_consent",
    DeviceStatus.GPC: "gpc_opt_out",
    DeviceStatus.BUDGET_SPENT: "budget_spent",
    DeviceStatus.NO_DATA: "no_data",
    DeviceStatus.NO_STORE: "store_unavailable",
    DeviceStatus.NOT_HOSTED: "not_hosted",
    DeviceStatus.FAILED: "local_failure",
    DeviceStatus.ROUND_ALREADY_SPENT: "round_already_spent",
}


def update_key(device: int | str) -> str:
    """Record name of one device's update (``update.<device>``) or of a sum."""
    return f"{_UPDATE}{device}"


def metrics_key(device: int | str) -> str:
    """Record name of one device's training metrics or of a sum's."""
    return f"{_METRICS}{device}"


def parse_device_key(name: str, prefix: str) -> int | None:
    """The device id of ``update.<id>`` / ``metrics.<id>``; ``None`` for other names.

    Raises:
        DataError: when the name has the prefix but no integer device id.
    """
    if not name.startswith(prefix) or name == f"{prefix}{SUM}":
        return None
    try:
        return int(name[len(prefix) :])
    except ValueError:
        raise DataError(f"record {name!r} does not name a device") from None


def array_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """An ArrayRecord keyed by the shared parameters' names (wire order kept)."""
    return ArrayRecord(
        {n: Array(np.ascontiguousarray(a)) for n, a in zip(names, arrays, strict=True)}
    )


def arrays_of(record: ArrayRecord) -> list[np.ndarray]:
    """The numpy arrays of a record, in its (wire) order."""
    return [record[k].numpy() for k in record]


def device_ids_of(content: RecordDict) -> list[int]:
    """The device ids a coordinator message addresses (``fedpers/device-ids``)."""
    record = content.config_records.get(FEDERATION)
    if record is None:
        return []
    ids = record.get("device-ids", [])
    return [int(i) for i in ids]  # type: ignore[union-attr]


def status_record(statuses: Mapping[int, DeviceStatus]) -> MetricRecord:
    """The ``status`` record: device id -> :class:`DeviceStatus` code."""
    return MetricRecord({str(d): int(s) for d, s in statuses.items()})


def federation_record(
    device_ids: Sequence[int],
    reply: ReplyMode,
    split: str = "train",
    record_level: Mapping[str, float | int | str] | None = None,
    secure: tuple[str, str] | None = None,
    monitoring: bool = False,
) -> ConfigRecord:
    """The ``fedpers`` ConfigRecord of a coordinator message.

    ``record_level`` holds the record-level DP-SGD settings of the round (the fields of
    :class:`~fedpers.client.training.dpsgd.DPSGDConfig`), sent as ``record.<field>``.
    ``secure`` is ``(scheme, key id)`` when updates must be encrypted. ``monitoring``
    asks the devices for their plaintext training statistics (the run's explicit
    ``monitoring_metrics = "plaintext"``; see :mod:`fedpers.client.egress`).
    """
    values: dict[str, Any] = {
        "device-ids": [int(d) for d in device_ids],
        "reply": reply.value,
        "split": split,
    }
    if secure is not None:
        values[SECURE_AGG], values[KEY_ID] = secure
    if monitoring:
        values[MONITORING] = MONITORING_PLAINTEXT
    for key, value in (record_level or {}).items():
        if value is not None:
            values[f"{RECORD_PREFIX}{key}"] = value
    return ConfigRecord(values)


def record_level_of(content: RecordDict) -> dict[str, Any] | None:
    """The record-level DP-SGD settings a coordinator message carries, if any."""
    record = content.config_records.get(FEDERATION)
    if record is None:
        return None
    values = {k[len(RECORD_PREFIX) :]: v for k, v in record.items() if k.startswith(RECORD_PREFIX)}
    return values or None


def monitoring_of(content: RecordDict) -> bool:
    """Whether a coordinator message asks for plaintext monitoring statistics."""
    record = content.config_records.get(FEDERATION)
    return record is not None and record.get(MONITORING) == MONITORING_PLAINTEXT


def secure_agg_of(content: RecordDict) -> tuple[str, str] | None:
    """``(scheme, key id)`` when a coordinator message asks for encrypted updates."""
    record = content.config_records.get(FEDERATION)
    if record is None or SECURE_AGG not in record:
        return None
    return str(record[SECURE_AGG]), str(record.get(KEY_ID, ""))


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The arrays concatenated into one flat float64 vector (wire order)."""
    if not arrays:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def unflatten(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Inverse of :func:`flatten`: float32 arrays of ``shapes``.

    Raises:
        DataError: when the length does not match the shapes.
    """
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if flat.ndim != 1 or flat.size != sum(sizes):
        raise DataError(f"flat update of shape {flat.shape} does not hold {sum(sizes)} values")
    out: list[np.ndarray] = []
    offset = 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(flat[offset : offset + size].reshape(shape).astype(np.float32))
        offset += size
    return out


def ciphertext_record(payload: bytes) -> ArrayRecord:
    """An update record holding one encrypted payload (uint8 array :data:`CIPHERTEXT`)."""
    return ArrayRecord({CIPHERTEXT: Array(np.frombuffer(payload, dtype=np.uint8).copy())})


def ciphertext_of(record: ArrayRecord) -> bytes | None:
    """The payload bytes of an encrypted update record, ``None`` when it is not one."""
    if list(record.keys()) != [CIPHERTEXT]:
        return None
    entry = record[CIPHERTEXT]
    if entry.dtype != "uint8" or len(entry.shape) != 1:
        return None
    try:
        array = entry.numpy()
    except (ValueError, TypeError):
        return None
    return bytes(array.tobytes()) if array.dtype == np.uint8 and array.ndim == 1 else None
