"""The typed wire vocabulary: what every value between coordinator and node means.

Each message part the coordinator and a node exchange is one dataclass here with one
``encode`` (to the flat ``str -> number | str | list`` mapping a Flower record holds) and
one ``decode`` (back, checking every value). :mod:`fedpers.client.wire` packs these
mappings into Flower records under their record names; the node
(:mod:`fedpers.client.app`) encodes what it sends and the coordinator
(:mod:`fedpers.server.collect`) decodes it, so both sides read one schema.

======================  ======================================  ==========================
record                  type                                    direction
======================  ======================================  ==========================
``fedpers``             :class:`NodeRequest`                    coordinator -> node
``metrics.<device>``    :class:`DeviceMetrics`                  node -> coordinator
``metrics.sum``         :class:`SumMetrics`                     node -> coordinator
``status``              :func:`encode_statuses` /               node -> coordinator
                        :func:`decode_status`
``eval``                :class:`EvaluationSums`                 node -> coordinator
``node``                :class:`NodeInfo`                       node -> coordinator
======================  ======================================  ==========================

Decoding never raises ``KeyError`` or ``TypeError``: a missing or malformed value raises
:class:`~fedpers.privacy.errors.DataError` naming the record and the entry. This module
decodes plain mappings and imports no Flower.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from fedpers.client.record_values import (
    Values,
    flag,
    integer,
    integers,
    number,
    optional_number,
    text,
)
from fedpers.privacy.errors import DataError

__all__ = [
    "EVAL_KEYS",
    "MONITORING_DEVICE_METRICS",
    "MONITORING_SUM_METRICS",
    "DeviceMetrics",
    "DeviceStatistics",
    "DeviceStatus",
    "EvaluationSums",
    "NodeInfo",
    "NodeRequest",
    "ReplyMode",
    "SumMetrics",
    "SumStatistics",
    "decode_status",
    "encode_statuses",
]


@dataclass(frozen=True)
class _Kind:
    """How one training statistic is written to a metric record and read back."""

    write: Callable[[Any], int | float | None]
    """The entry's value; ``None`` leaves the entry out."""
    read: Callable[[Values, str, str], Any]


def _finite_or_left_out(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


_NUMBER: Final = _Kind(float, number)
_COUNT: Final = _Kind(int, integer)
_FLAG: Final = _Kind(int, flag)
_FINITE: Final = _Kind(_finite_or_left_out, optional_number)
"""Sent only when finite; a left-out entry reads back as ``None``."""

_DEVICE_STATISTICS: Final = {
    "norm": _NUMBER,
    "clipped": _FLAG,
    "n-examples": _COUNT,
    "loss": _NUMBER,
    "record-epsilon": _FINITE,
}
"""The entries of :class:`DeviceStatistics` in wire order (attribute: ``-`` -> ``_``)."""
_SUM_STATISTICS: Final = {
    "clipped": _COUNT,
    "n-examples": _COUNT,
    "loss-sum": _NUMBER,
    "norm-sum": _NUMBER,
    "norm-max": _NUMBER,
    "record-epsilon-max": _FINITE,
}
"""The entries of :class:`SumStatistics` in wire order (attribute: ``-`` -> ``_``)."""

EVAL_KEYS: Final = ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")
"""Per-device evaluation metrics a node sums (the project-wide metric names)."""
MONITORING_DEVICE_METRICS: Final = tuple(_DEVICE_STATISTICS)
"""Per-device training statistics sent only with the monitoring flag."""
MONITORING_SUM_METRICS: Final = tuple(_SUM_STATISTICS)
"""A cohort node's summed statistics sent only with the monitoring flag."""

MONITORING_PLAINTEXT: Final = "plaintext"
"""The ``monitoring`` value of a :class:`NodeRequest` that asks for the statistics."""
_RECORD_PREFIX: Final = "record."


class ReplyMode(enum.StrEnum):
    """How a node returns its devices' updates."""

    PER_DEVICE = "per-device"
    SUM = "sum"


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

# ---------------------------------------------------------------------- node -> coordinator


class _Statistics:
    """Training statistics sent as the entries of a table (attribute: ``-`` -> ``_``)."""

    _ENTRIES: ClassVar[Mapping[str, _Kind]]
    """Entry name -> how it is written and read, in wire order."""

    def encode(self) -> dict[str, int | float]:
        """The entries in wire order (the record-level epsilon only when finite)."""
        out: dict[str, int | float] = {}
        for key, kind in self._ENTRIES.items():
            value = kind.write(getattr(self, key.replace("-", "_")))
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def decode(cls, values: Values, record: str) -> Self:
        """Inverse of :meth:`encode`.

        Raises:
            DataError: when an entry is missing or not of its type.
        """
        entries = cls._ENTRIES.items()
        return cls(
            **{key.replace("-", "_"): kind.read(values, key, record) for key, kind in entries}
        )


@dataclass(frozen=True)
class DeviceStatistics(_Statistics):
    """One device's training statistics (sent only with the run's monitoring flag).

    Attributes:
        norm: the L2 norm of the update before clipping.
        clipped: whether clipping scaled the update down.
        n_examples: training pairs used this round.
        loss: mean loss of the last local epoch.
        record_epsilon: the device's composed record-level epsilon (DP-SGD), if any.
    """

    norm: float
    clipped: bool
    n_examples: int
    loss: float
    record_epsilon: float | None = None

    _ENTRIES: ClassVar = _DEVICE_STATISTICS


@dataclass(frozen=True)
class DeviceMetrics:
    """The ``metrics.<device>`` record of one device's update.

    Attributes:
        indicator: adaptive clipping's noised unclipped indicator, ``None`` without it.
        statistics: the monitoring statistics, ``None`` unless the run asked for them.
    """

    indicator: float | None = None
    statistics: DeviceStatistics | None = None

    def encode(self) -> dict[str, int | float]:
        """The record's entries (empty: the record is not sent)."""
        out = {} if self.statistics is None else self.statistics.encode()
        if self.indicator is not None:
            out["indicator"] = float(self.indicator)
        return out

    @classmethod
    def decode(cls, values: Values, record: str = "metrics.<device>") -> DeviceMetrics:
        """Inverse of :meth:`encode` (statistics when ``norm`` is present).

        Raises:
            DataError: when an entry is missing or not of its type.
        """
        statistics = DeviceStatistics.decode(values, record) if "norm" in values else None
        return cls(optional_number(values, "indicator", record), statistics)


@dataclass(frozen=True)
class SumStatistics(_Statistics):
    """A cohort node's summed training statistics (monitoring flag only).

    Attributes:
        clipped: devices whose update was clipped.
        n_examples: training pairs over the node's devices.
        loss_sum: the sum of the devices' losses.
        norm_sum: the sum of the devices' update norms before clipping.
        norm_max: the largest of those norms.
        record_epsilon_max: the largest record-level epsilon of the devices, if any.
    """

    clipped: int
    n_examples: int
    loss_sum: float
    norm_sum: float
    norm_max: float
    record_epsilon_max: float | None = None

    _ENTRIES: ClassVar = _SUM_STATISTICS


@dataclass(frozen=True)
class SumMetrics:
    """The ``metrics.sum`` record of a node's summed update.

    Attributes:
        count: how many device updates the sum holds.
        device_ids: which devices they are (participation is visible by design).
        indicator: the sum of adaptive clipping's indicators, ``None`` without it.
        statistics: the summed monitoring statistics, ``None`` unless asked for.
    """

    count: int
    device_ids: tuple[int, ...]
    indicator: float | None = None
    statistics: SumStatistics | None = None

    def encode(self) -> dict[str, int | float | list[int]]:
        """The record's entries in wire order."""
        out: dict[str, int | float | list[int]] = {
            "count": int(self.count),
            "device-ids": [int(d) for d in self.device_ids],
        }
        if self.statistics is not None:
            out.update(self.statistics.encode())
        if self.indicator is not None:
            out["indicator"] = float(self.indicator)
        return out

    @classmethod
    def decode(cls, values: Values, record: str = "metrics.sum") -> SumMetrics:
        """Inverse of :meth:`encode` (statistics when ``norm-sum`` is present).

        Raises:
            DataError: when an entry is missing or not of its type.
        """
        statistics = SumStatistics.decode(values, record) if "norm-sum" in values else None
        return cls(
            count=integer(values, "count", record),
            device_ids=integers(values, "device-ids", record),
            indicator=optional_number(values, "indicator", record),
            statistics=statistics,
        )


def encode_statuses(statuses: Mapping[int, DeviceStatus]) -> dict[str, int]:
    """The ``status`` record: device id -> :class:`DeviceStatus` code."""
    return {str(d): int(s) for d, s in statuses.items()}


def decode_status(key: str, code: object) -> tuple[int, DeviceStatus]:
    """One entry of a ``status`` record: the device and its status.

    Raises:
        DataError: when the key is not a device id or the code is not a status.
    """
    try:
        if isinstance(code, bool) or not isinstance(code, int | float):
            raise ValueError(code)
        return int(key), DeviceStatus(int(code))
    except ValueError:
        raise DataError(f"status record: {key!r} -> {code!r} is not a device status") from None


@dataclass(frozen=True)
class EvaluationSums:
    """The ``eval`` record: how many held-out items a node scored and the metric sums.

    Sums rather than means keep the coordinator's aggregation exact whatever the node
    layout. A sum that is not finite is not sent (the coordinator then ignores the node).

    Attributes:
        count: held-out items scored.
        sums: metric name (:data:`EVAL_KEYS`) -> sum over those items.
    """

    count: int
    sums: Mapping[str, float] = field(default_factory=dict)

    def encode(self) -> dict[str, int | float]:
        """``count`` then the finite sums."""
        out: dict[str, int | float] = {"count": int(self.count)}
        out.update({k: float(v) for k, v in self.sums.items() if math.isfinite(v)})
        return out

    @classmethod
    def decode(cls, values: Values, record: str = "eval") -> EvaluationSums:
        """Inverse of :meth:`encode`; every metric of :data:`EVAL_KEYS` must be there.

        Raises:
            DataError: when ``count`` or a metric is missing or not a number.
        """
        return cls(
            integer(values, "count", record), {k: number(values, k, record) for k in EVAL_KEYS}
        )

    @property
    def plausible(self) -> bool:
        """A positive count and every sum finite within ``[0, count]``."""
        return self.count > 0 and all(
            math.isfinite(v) and 0 <= v <= self.count for v in self.sums.values()
        )


@dataclass(frozen=True)
class NodeInfo:
    """The ``node`` record of the handshake: which partition (and device) a node is.

    Attributes:
        partition_id: the node's partition (``-1``: none given).
        num_partitions: how many partitions the federation has.
        device_id: node mode: the device the node hosts; ``-1`` in cohort mode.
    """

    partition_id: int
    num_partitions: int
    device_id: int

    def encode(self) -> dict[str, int]:
        """The record's entries."""
        return {
            "partition-id": int(self.partition_id),
            "num-partitions": int(self.num_partitions),
            "device-id": int(self.device_id),
        }

    @classmethod
    def decode(cls, values: Values, record: str = "node") -> NodeInfo:
        """Inverse of :meth:`encode`.

        Raises:
            DataError: when an entry is missing or not an integer.
        """
        return cls(
            integer(values, "partition-id", record),
            integer(values, "num-partitions", record),
            integer(values, "device-id", record),
        )


# ---------------------------------------------------------------------- coordinator -> node


@dataclass(frozen=True)
class NodeRequest:
    """The ``fedpers`` record of a coordinator message: what it asks of one node.

    Attributes:
        device_ids: the sampled (or evaluated) devices this node hosts.
        reply: per-device updates or their sum.
        split: the held-out split of an evaluation (``test`` or ``valid``).
        record_level: the round's record-level DP-SGD settings (the fields of
            :class:`~fedpers.client.training.dpsgd.DPSGDConfig`), sent as
            ``record.<field>``; ``None``: no record-level DP.
        secure: ``(scheme, key id)`` when updates must be encrypted.
        monitoring: the run's explicit ``monitoring_metrics = "plaintext"``: the devices
            send their training statistics (see :mod:`fedpers.client.egress`).
    """

    device_ids: tuple[int, ...] = ()
    reply: ReplyMode = ReplyMode.PER_DEVICE
    split: str = "test"
    record_level: Mapping[str, Any] | None = None
    secure: tuple[str, str] | None = None
    monitoring: bool = False

    def encode(self) -> dict[str, Any]:
        """The record's entries (``record.*`` entries whose value is ``None`` are left out)."""
        values: dict[str, Any] = {
            "device-ids": [int(d) for d in self.device_ids],
            "reply": self.reply.value,
            "split": self.split,
        }
        if self.secure is not None:
            values["secure-agg"], values["key-id"] = self.secure
        if self.monitoring:
            values["monitoring"] = MONITORING_PLAINTEXT
        for key, value in (self.record_level or {}).items():
            if value is not None:
                values[f"{_RECORD_PREFIX}{key}"] = value
        return values

    @classmethod
    def decode(cls, values: Values | None, record: str = "fedpers") -> NodeRequest:
        """Inverse of :meth:`encode`; no record at all asks for nothing special.

        Raises:
            DataError: when an entry is not of its type or the reply mode is unknown.
        """
        if values is None:
            return cls()
        reply = text(values, "reply", record, ReplyMode.PER_DEVICE.value)
        try:
            mode = ReplyMode(reply)
        except ValueError:
            raise DataError(f"record {record!r}: unknown reply mode {reply!r}") from None
        level = {
            k[len(_RECORD_PREFIX) :]: v for k, v in values.items() if k.startswith(_RECORD_PREFIX)
        }
        secure = None
        if "secure-agg" in values:
            secure = (str(values["secure-agg"]), str(values.get("key-id", "")))
        return cls(
            device_ids=integers(values, "device-ids", record) if "device-ids" in values else (),
            reply=mode,
            split=text(values, "split", record, "test"),
            record_level=level or None,
            secure=secure,
            monitoring=values.get("monitoring") == MONITORING_PLAINTEXT,
        )
