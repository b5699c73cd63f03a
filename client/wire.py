"""The wire vocabulary between the coordinator and the device-side ClientApp.

Flower records are the only things that cross the wire (``flwr.app`` ``RecordDict``).
This module names them once and packs the typed values of
:mod:`fedpers.client.protocol` into them; :mod:`fedpers.client.app` builds replies with
these helpers and :mod:`fedpers.server.collect` parses them, so both sides agree on one
schema.

Coordinator -> node (``train`` and ``evaluate`` messages):

=====================  ============  =====================================================
record                 type          content
=====================  ============  =====================================================
``arrays``             ArrayRecord   the global shared parameters, wire order
``config``             ConfigRecord  the round instructions (``RoundInstructions``)
``fedpers``            ConfigRecord  ``device-ids`` (the sampled devices this node hosts),
                                     ``reply`` (``per-device`` or ``sum``), ``split``
                                     (:class:`~fedpers.client.protocol.NodeRequest`)
=====================  ============  =====================================================

Node -> coordinator (``train`` reply); nothing else may be in it:

=========================  ============  =================================================
record                     type          content
=========================  ============  =================================================
``update.<device>``        ArrayRecord   one device's clipped (+ noise share) delta
``metrics.<device>``       MetricRecord  (:class:`~fedpers.client.protocol.DeviceMetrics`)
                                         ``indicator`` (adaptive clipping); only with
                                         ``monitoring = "plaintext"`` also ``norm``,
                                         ``clipped``, ``n-examples``, ``loss``,
                                         ``record-epsilon`` (record-level DP-SGD)
``update.sum``             ArrayRecord   the sum of the node's devices' deltas (sum reply)
``metrics.sum``            MetricRecord  (:class:`~fedpers.client.protocol.SumMetrics`)
                                         ``count``, ``device-ids``, ``indicator``; only
                                         with ``monitoring = "plaintext"`` also
                                         ``clipped``, ``n-examples``, ``loss-sum``,
                                         ``norm-sum``, ``norm-max``,
                                         ``record-epsilon-max``
``status``                 MetricRecord  ``<device>`` -> ``DeviceStatus`` code for
                                         every device that sent no update (refused/failed)
=========================  ============  =================================================

With secure aggregation (``fedpers`` record ``secure-agg = "ckks"`` and ``key-id``), an
``update.<device>`` or ``update.sum`` record holds a single uint8 array named
:data:`CIPHERTEXT` instead of the shared parameters: the bytes of a
:class:`~fedpers.privacy.secagg.EncryptedUpdate` of the flattened update (wire order,
:func:`fedpers.privacy.dp.clipping.flatten`).

``evaluate`` reply: one MetricRecord ``eval`` with ``count`` and the *sums* of the
per-device metrics (``hr10_sampled`` ...), plus ``status`` as above. Sums rather than
means keep the coordinator's aggregation exact whatever the node layout.

Every value a device reports is numeric and listed, with what protects it, in the egress
catalogue (:mod:`fedpers.client.egress`). Which devices took part is visible to the
coordinator (see docs/threat-model.md); per-device training statistics only with the
explicit monitoring flag; events, history item identifiers and private user vectors never.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedpers.client.protocol import DeviceStatus, NodeRequest, encode_statuses
from fedpers.privacy.errors import DataError

__all__ = [
    "ARRAYS",
    "CIPHERTEXT",
    "CONFIG",
    "EVAL",
    "FEDERATION",
    "NODE",
    "STATUS",
    "SUM",
    "array_record",
    "arrays_of",
    "ciphertext_of",
    "ciphertext_record",
    "metrics_key",
    "parse_device_key",
    "request_of",
    "request_record",
    "status_record",
    "update_key",
]

ARRAYS = "arrays"
CONFIG = "config"
FEDERATION = "fedpers"
STATUS = "status"
EVAL = "eval"
NODE = "node"
SUM = "sum"
CIPHERTEXT = "ckks"
"""Name of the one uint8 array of an encrypted update record."""

_UPDATE = "update."
_METRICS = "metrics."


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


def status_record(statuses: Mapping[int, DeviceStatus]) -> MetricRecord:
    """The ``status`` record: device id -> :class:`DeviceStatus` code."""
    return MetricRecord(encode_statuses(statuses))


def request_record(request: NodeRequest) -> ConfigRecord:
    """The ``fedpers`` ConfigRecord of a coordinator message."""
    return ConfigRecord(request.encode())


def request_of(content: RecordDict) -> NodeRequest:
    """What a coordinator message asks of this node (its ``fedpers`` record).

    Raises:
        DataError: when the record is malformed.
    """
    record = content.config_records.get(FEDERATION)
    return NodeRequest.decode(None if record is None else dict(record), FEDERATION)


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
