"""Walk one round's replies: validate, sum, and record who took part and what was sent.

:class:`RoundCollector` is step 2 of a :class:`~fedpers.server.strategy.FedPersStrategy`
round. Every reply is catalogued (:func:`egress_of`); node errors, timeouts, refusals
(consent, GPC, budget), duplicates, devices that were not sampled or not addressed to
that node, malformed metrics and malformed updates (NaN/inf, wrong shape or dtype, a norm
above the clipping bound) are dropped with a reason; the rest are summed by the
:class:`~fedpers.server.aggregation.UpdateAggregator` (pipeline step 6; with secure
aggregation, encrypted payloads: a refused or out-of-bound decryption skips the round).
The metric records are read through :mod:`fedpers.client.protocol`'s typed decoders.

:func:`round_report` turns the :class:`RoundCollection` into the run database's
:class:`~fedpers.server.rundb.RoundReport`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

from fedpers.client.device_round import RoundInstructions
from fedpers.client.egress import protection_of
from fedpers.client.protocol import DeviceMetrics, SumMetrics, decode_status
from fedpers.client.wire import STATUS, SUM, metrics_key, parse_device_key, update_key
from fedpers.privacy.errors import DataError, SecureAggregationError
from fedpers.server.aggregation import UpdateAggregator
from fedpers.server.rundb import EgressRecord, ParticipantRecord, RoundRecord, RoundReport

__all__ = [
    "NON_PRIVATE",
    "RoundCollection",
    "RoundCollector",
    "RoundPlan",
    "RoundPrivacy",
    "egress_of",
    "round_report",
]

logger = logging.getLogger(__name__)

_UNEXPECTED = ("duplicate", "not_sampled", "not_addressed_to_node")
_EXTRA = ("duplicate", "unexpected")


@dataclass(frozen=True)
class RoundPlan:
    """What ``configure_train`` decided for a round, kept until its replies arrive.

    Attributes:
        sampled: the sampled devices.
        groups: node id -> the sampled devices it hosts (the devices it was sent).
        orphans: sampled devices no node hosts.
        instructions: the round instructions sent.
        started_at: when the round was configured (``time.time()``).
    """

    sampled: np.ndarray
    groups: Mapping[int, list[int]]
    orphans: list[int]
    instructions: RoundInstructions
    started_at: float


@dataclass
class RoundCollection:
    """What a :class:`RoundCollector` gathered from a round's replies."""

    server_round: int
    sampled: np.ndarray
    participants: list[ParticipantRecord] = field(default_factory=list)
    egress: list[EgressRecord] = field(default_factory=list)
    accepted: int = 0
    clipped: int = 0
    norms: list[float] = field(default_factory=list)
    norm_sum: float = 0.0
    norm_max: float = 0.0
    loss_sum: float = 0.0
    n_examples: int = 0
    indicator_sum: float = 0.0
    record_epsilon_max: float | None = None
    total: list[np.ndarray] | None = None
    aggregation_error: str | None = None
    monitored: bool = False
    unclipped_estimate: float | None = None

    def note_record_epsilon(self, value: float | None) -> None:
        """Keep the largest finite record-level epsilon a device reported."""
        if value is not None and math.isfinite(value):
            current = self.record_epsilon_max
            self.record_epsilon_max = value if current is None else max(current, value)

    def add_device(self, metrics: DeviceMetrics, monitoring: bool) -> None:
        """Count an accepted device's metrics (statistics only when monitoring)."""
        self.indicator_sum += metrics.indicator or 0.0
        stats = metrics.statistics
        if monitoring and stats is not None:
            self.monitored = True
            self.norms.append(stats.norm)
            self.norm_sum += stats.norm
            self.norm_max = max(self.norm_max, stats.norm)
            self.clipped += int(stats.clipped)
            self.loss_sum += stats.loss
            self.n_examples += stats.n_examples
            self.note_record_epsilon(stats.record_epsilon)

    def add_sum(self, metrics: SumMetrics, monitoring: bool) -> None:
        """Count an accepted node sum's metrics (statistics only when monitoring)."""
        self.indicator_sum += metrics.indicator or 0.0
        stats = metrics.statistics
        if monitoring and stats is not None:
            self.monitored = True
            self.clipped += stats.clipped
            self.loss_sum += stats.loss_sum
            self.n_examples += stats.n_examples
            self.norm_sum += stats.norm_sum
            self.norm_max = max(self.norm_max, stats.norm_max)
            self.note_record_epsilon(stats.record_epsilon_max)

    def counts(self) -> dict[str, int]:
        """How many sampled devices were accepted, dropped or refused."""
        status = [p.status for p in self.participants if p.status not in _EXTRA]
        return {
            "accepted": status.count("accepted"),
            "refused": status.count("refused"),
            "dropped": len(status) - status.count("accepted") - status.count("refused"),
        }


def egress_of(
    message_type: str, reply: Message, node: int | None, secure: bool = False
) -> list[EgressRecord]:
    """Catalogue every entry of a reply as the coordinator received it.

    Each entry carries its protection from the egress catalogue
    (:func:`fedpers.client.egress.protection_of`; ``""`` when it is not listed).
    """
    return [
        replace(
            e,
            protection=protection_of(e.message_type, e.record, e.name, e.kind, e.dtype, secure)
            or "",
        )
        for e in _egress_entries(message_type, reply, node)
    ]


def _egress_entries(message_type: str, reply: Message, node: int | None) -> list[EgressRecord]:
    if reply.has_error():
        reason = reply.error.reason or ""
        return [
            EgressRecord(
                message_type, node, None, "error", "reason", "error", (), "str", len(reason)
            )
        ]

    def entry(
        record: str, name: str, kind: str, shape: tuple[int, ...], dtype: str, nbytes: int
    ) -> EgressRecord:
        device = None if kind == "config" else _device_of(record)
        return EgressRecord(message_type, node, device, record, name, kind, shape, dtype, nbytes)

    content = reply.content
    out: list[EgressRecord] = []
    for name, record in content.array_records.items():
        for key in record:
            arr = record[key]
            out.append(entry(name, key, "array", tuple(arr.shape), arr.dtype, len(arr.data)))
    for name, metrics in content.metric_records.items():
        for key, value in metrics.items():
            shape: tuple[int, ...] = (len(value),) if isinstance(value, list) else ()
            first = value[0] if isinstance(value, list) and value else value
            dtype = "int" if isinstance(first, int) else "float"
            out.append(entry(name, key, "metric", shape, dtype, 8 * max(1, math.prod(shape))))
    for name, config in content.config_records.items():
        for key, value in config.items():
            out.append(entry(name, key, "config", (), type(value).__name__, len(str(value))))
    return out


def _device_of(name: str) -> int | None:
    for prefix in ("update.", "metrics."):
        try:
            device = parse_device_key(name, prefix)
        except DataError:
            return None
        if device is not None:
            return int(device)
    return None


class RoundCollector:
    """Validates and sums one round's replies against the round's plan.

    Args:
        server_round: the round.
        plan: what was sent to whom.
        aggregator: the sum (reset here).
        bound: the largest norm a correct single-device update can have.
        monitoring: whether the run asked for the devices' training statistics.
        secure: whether updates arrive encrypted (for the egress catalogue).
    """

    def __init__(
        self,
        server_round: int,
        plan: RoundPlan,
        aggregator: UpdateAggregator,
        bound: float,
        *,
        monitoring: bool,
        secure: bool,
    ) -> None:
        self.plan = plan
        self.aggregator = aggregator
        self.bound = bound
        self.monitoring = monitoring
        self.secure = secure
        self.addressed = {d: node for node, ds in plan.groups.items() for d in ds}
        self.coll = RoundCollection(server_round, plan.sampled)
        self.seen: set[int] = set()

    def collect(self, replies: Iterable[Message]) -> RoundCollection:
        """Walk every reply; then sum (or record why the sum failed)."""
        coll, groups = self.coll, self.plan.groups
        self.aggregator.reset(coll.server_round)
        for d in self.plan.orphans:
            coll.participants.append(ParticipantRecord(d, "dropped", "no_node_hosts_device"))
        answered: set[int] = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            coll.egress.extend(egress_of("train", reply, node, self.secure))
            if node not in groups:
                logger.warning(
                    "round %d: reply from node %s, not addressed", coll.server_round, node
                )
                continue
            if node in answered:
                logger.warning("round %d: repeated reply from node %s", coll.server_round, node)
            answered.add(node)
            if reply.has_error():
                for d in groups[node]:
                    self._note(d, "failed", f"node_error:{reply.error.code}", node)
                continue
            self._reply(reply.content, node)
        for node, devices in groups.items():
            for d in devices:
                if d not in self.seen:
                    status = "timeout" if node not in answered else "dropped"
                    reason = (
                        "no_reply_before_timeout" if node not in answered else "missing_from_reply"
                    )
                    coll.participants.append(ParticipantRecord(d, status, reason, node))
        coll.accepted = self.aggregator.count
        if coll.accepted:
            try:
                coll.total = self.aggregator.total()
            except SecureAggregationError as exc:
                coll.aggregation_error = f"secure_aggregation: {exc}"
                logger.warning("round %d: no aggregate: %s", coll.server_round, exc)
        return coll

    def _note(self, device: int, status: str, reason: str | None, node: int) -> None:
        self.seen.add(device)
        self.coll.participants.append(ParticipantRecord(device, status, reason, node))

    def _drop_all(self, node: int, reason: str) -> None:
        """Every device of ``node`` not yet accounted for is dropped with ``reason``."""
        for d in self.plan.groups[node]:
            if d not in self.seen:
                self._note(d, "dropped", reason, node)

    def _reply(self, content: RecordDict, node: int) -> None:
        coll, devices = self.coll, self.plan.groups[node]
        for key, code in content.metric_records.get(STATUS, {}).items():
            try:
                refused, status = decode_status(key, code)
            except DataError:
                continue
            if refused in devices and refused not in self.seen:
                self._note(
                    refused, "refused" if status.is_refusal else "dropped", status.reason, node
                )
        for name, record in content.array_records.items():
            if name == update_key(SUM):
                self._sum(content, record, node)
                continue
            try:
                device = parse_device_key(name, "update.")
            except DataError:
                device = None
            if device is None:
                logger.warning(
                    "round %d: node %s sent an unknown record %r", coll.server_round, node, name
                )
                continue
            self._device_update(content, record, device, node)

    def _device_update(
        self, content: RecordDict, record: ArrayRecord, device: int, node: int
    ) -> None:
        coll = self.coll
        reason = self._admit(device, node)
        if reason is None:
            try:
                values = content.metric_records.get(metrics_key(device))
                metrics = DeviceMetrics.decode(dict(values or {}), metrics_key(device))
            except DataError as exc:
                logger.warning("round %d: %s", coll.server_round, exc)
                reason = "malformed_metrics"
            else:
                reason = self.aggregator.add(str(device), record, 1, self.bound)
                if reason is None:
                    coll.add_device(metrics, self.monitoring)
        if reason in _UNEXPECTED:
            status = "duplicate" if reason == "duplicate" else "unexpected"
            coll.participants.append(ParticipantRecord(device, status, reason, node))
        else:
            self._note(device, "accepted" if reason is None else "dropped", reason, node)
        if reason is not None:
            logger.warning("round %d: device %s dropped: %s", coll.server_round, device, reason)

    def _admit(self, device: int, node: int) -> str | None:
        if device in self.seen:
            return "duplicate"
        if device not in self.addressed:
            return "not_sampled"
        if device not in self.plan.groups[node]:
            return "not_addressed_to_node"
        return None

    def _sum(self, content: RecordDict, record: ArrayRecord, node: int) -> None:
        coll, devices, seen = self.coll, self.plan.groups[node], self.seen
        values = content.metric_records.get(metrics_key(SUM))
        if values is None:
            self._drop_all(node, "sum_without_metrics")
            return
        try:
            metrics = SumMetrics.decode(dict(values))
        except DataError as exc:
            logger.warning("round %d: node %s: %s", coll.server_round, node, exc)
            self._drop_all(node, "malformed_metrics")
            return
        claimed = list(metrics.device_ids)
        for d in claimed:
            if d in seen:
                coll.participants.append(ParticipantRecord(d, "duplicate", "duplicate", node))
        bad = (
            metrics.count != len(claimed)
            or len(set(claimed)) != len(claimed)
            or any(d not in devices or d in seen for d in claimed)
        )
        reason = (
            "bad_contributor_list"
            if bad
            else self.aggregator.add(f"node-{node}", record, metrics.count, self.bound)
        )
        for d in claimed:
            if d in devices and d not in seen:
                self._note(d, "accepted" if reason is None else "dropped", reason, node)
        if reason is None:
            coll.add_sum(metrics, self.monitoring)
        else:
            logger.warning(
                "round %d: sum from node %s dropped: %s", coll.server_round, node, reason
            )


def _summary(
    values: Sequence[float],
) -> tuple[float | None, float | None, float | None, float | None]:
    if not values:
        return None, None, None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.min()), float(np.median(arr)), float(arr.mean()), float(arr.max())


@dataclass(frozen=True)
class RoundPrivacy:
    """A round's user-level DP figures, as the DP wrapper reports them.

    Every one is ``None`` in a run without user-level DP. The names are those of the
    :class:`~fedpers.server.rundb.RoundRecord` columns they fill.

    Attributes:
        clip_norm: the round's clip norm ``C``.
        noise_multiplier: ``sigma``.
        noise_std: standard deviation of the noise on the sum.
        epsilon: epsilon spent so far (``None``: non-private).
        delta: the target delta.
    """

    clip_norm: float | None = None
    noise_multiplier: float | None = None
    noise_std: float | None = None
    epsilon: float | None = None
    delta: float | None = None


NON_PRIVATE = RoundPrivacy()
"""The figures of a round without user-level DP: none."""


def round_report(
    coll: RoundCollection,
    status: str,
    reason: str | None,
    *,
    sample_rate: float | None,
    started_at: float,
    privacy: RoundPrivacy = NON_PRIVATE,
) -> RoundReport:
    """The run database's report of a collected round (``wall_seconds`` left at 0).

    The norm summary and the clipped fraction come from the monitoring statistics when
    the run asked for them; otherwise the clipped fraction is adaptive clipping's noised
    (accounted) release, when there is one.
    """
    counts = coll.counts()
    per_device = coll.norms if len(coll.norms) == coll.accepted else []
    n_min, n_med, n_mean, n_max = _summary(per_device)
    if not per_device and coll.accepted and coll.monitored:
        n_mean, n_max = coll.norm_sum / coll.accepted, coll.norm_max
    monitored = coll.monitored and coll.accepted > 0
    if monitored:
        clipped_fraction: float | None = coll.clipped / coll.accepted
    elif coll.unclipped_estimate is not None:
        # adaptive clipping's DP release (noised, accounted), clamped to [0, 1]
        clipped_fraction = min(1.0, max(0.0, 1.0 - coll.unclipped_estimate))
    else:
        clipped_fraction = None
    metrics: dict[str, float] = {}
    if monitored:
        metrics["loss"] = coll.loss_sum / coll.accepted
    if coll.record_epsilon_max is not None:
        metrics["record_epsilon_max"] = coll.record_epsilon_max
    record = RoundRecord(
        round=coll.server_round,
        status=status,
        reason=reason,
        sampled=len(coll.sampled),
        participants=counts["accepted"],
        dropped=counts["dropped"],
        refused=counts["refused"],
        sample_rate=sample_rate,
        clipped_fraction=clipped_fraction,
        norm_min=n_min,
        norm_median=n_med,
        norm_mean=n_mean,
        norm_max=n_max,
        metrics=metrics,
        started_at=started_at,
        **asdict(privacy),
    )
    return RoundReport(record, coll.participants, coll.egress)
