"""The fedpers Flower strategy: sample devices, send the model, validate, sum, step.

One round of :class:`FedPersStrategy` (non-private on its own; wrap it in
:class:`~fedpers.server.dp_wrapper.UserLevelDP` for user-level DP):

1. :meth:`~FedPersStrategy.configure_train` samples devices
   (:mod:`fedpers.server.sampling`), groups them by the node that hosts them
   (:class:`NodeLayout`: one device per node, or cohorts of virtual devices per node)
   and sends each node the global shared parameters, the round instructions
   (:class:`~fedpers.client.device_round.RoundInstructions`) and its device ids;
2. :meth:`~FedPersStrategy.collect_train` walks every reply: node errors, timeouts,
   refusals (consent, GPC, budget), duplicates, devices that were not sampled or not
   addressed to that node, and malformed updates (NaN/inf, wrong shape or dtype, a norm
   above the clipping bound) are dropped with a reason; the rest are summed by the
   :class:`~fedpers.server.aggregation.UpdateAggregator` (pipeline step 6; with secure
   aggregation, :class:`~fedpers.server.secure_aggregation.CkksAggregator`: encrypted
   payloads, a refused or out-of-bound decryption skips the round). Every
   payload is catalogued (:class:`~fedpers.server.rundb.EgressRecord`);
3. :func:`~fedpers.privacy.dp.pipeline.finalize_aggregate` divides the sum by the
   expected cohort size (with no noise here; the DP wrapper adds it);
4. :meth:`~FedPersStrategy.apply_mean` runs the server optimiser.

A round with fewer than ``min_participants`` accepted updates is *skipped*: the model is
unchanged, nothing is released, and the report says so.

What happened is kept in :attr:`FedPersStrategy.reports` (one :class:`RoundReport` per
round) for the run database; the strategy itself never writes files.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpers.client.device_round import RoundInstructions
from fedpers.client.egress import protection_of
from fedpers.client.training.local import LocalTrainConfig
from fedpers.client.wire import (
    ARRAYS,
    CONFIG,
    EVAL,
    EVAL_KEYS,
    FEDERATION,
    STATUS,
    SUM,
    DeviceStatus,
    ReplyMode,
    arrays_of,
    federation_record,
    metrics_key,
    parse_device_key,
    update_key,
)
from fedpers.privacy.dp.noise import server_rng
from fedpers.privacy.dp.pipeline import finalize_aggregate
from fedpers.privacy.errors import ConfigError, DataError, SecureAggregationError
from fedpers.server.aggregation import UpdateAggregator
from fedpers.server.optimizers import ServerOptimizer
from fedpers.server.rundb import EgressRecord, ParticipantRecord
from fedpers.server.sampling import DeviceSampler

__all__ = [
    "INSTRUCTION_OVERRIDES",
    "FedPersStrategy",
    "NodeLayout",
    "RoundCollection",
    "RoundReport",
    "egress_of",
    "train_metrics",
]

logger = logging.getLogger(__name__)

_UNEXPECTED = ("duplicate", "not_sampled", "not_addressed_to_node")
_EXTRA = ("duplicate", "unexpected")

INSTRUCTION_OVERRIDES = ("clip_norm", "noise_share_std", "indicator_noise_share_std")
"""Round-instruction keys a wrapper may set through the ``config`` of ``configure_train``."""


@dataclass(frozen=True)
class NodeLayout:
    """Which Flower node hosts which device.

    Attributes:
        mode: ``"node"`` (one device per node) or ``"cohort"`` (devices spread over nodes
            by ``device % len(nodes)``).
        nodes: node ids ordered by partition id.
        device_node: node mode only: device id -> node id.
    """

    mode: str
    nodes: tuple[int, ...]
    device_node: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def from_hello(cls, mode: str, replies: Iterable[Message]) -> NodeLayout:
        """Build the layout from the nodes' handshake replies (``node`` MetricRecord).

        Raises:
            ConfigError: when no node answered, or in node mode two nodes claim a device.
        """
        found: list[tuple[int, int, int]] = []
        for reply in replies:
            if reply.has_error() or "node" not in reply.content.metric_records:
                continue
            info = reply.content.metric_records["node"]
            found.append(
                (int(info["partition-id"]), int(info["device-id"]), reply.metadata.src_node_id)  # type: ignore[call-overload]
            )
        if not found:
            raise ConfigError("no node answered the handshake")
        found.sort()
        nodes = tuple(node for _, _, node in found)
        if mode == "cohort":
            return cls("cohort", nodes)
        device_node: dict[int, int] = {}
        for _, device, node in found:
            if device in device_node:
                raise ConfigError(f"two nodes claim device {device}")
            device_node[device] = node
        return cls("node", nodes, device_node)

    def node_of(self, device: int) -> int | None:
        """The node hosting ``device`` (``None`` when no node does)."""
        if self.mode == "cohort":
            return self.nodes[device % len(self.nodes)]
        return self.device_node.get(device)

    def group(self, devices: Iterable[int]) -> tuple[dict[int, list[int]], list[int]]:
        """Devices grouped by hosting node, and the devices no node hosts."""
        groups: dict[int, list[int]] = defaultdict(list)
        orphans: list[int] = []
        for d in devices:
            node = self.node_of(int(d))
            if node is None:
                orphans.append(int(d))
            else:
                groups[node].append(int(d))
        return dict(groups), orphans


@dataclass
class RoundCollection:
    """What :meth:`FedPersStrategy.collect_train` gathered from a round's replies."""

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

    def note_record_epsilon(self, value: object) -> None:
        """Keep the largest record-level epsilon a device reported."""
        if isinstance(value, int | float) and math.isfinite(value):
            current = self.record_epsilon_max
            self.record_epsilon_max = float(value) if current is None else max(current, value)

    def counts(self) -> dict[str, int]:
        """How many sampled devices were accepted, dropped or refused."""
        status = [p.status for p in self.participants if p.status not in _EXTRA]
        return {
            "accepted": status.count("accepted"),
            "refused": status.count("refused"),
            "dropped": len(status) - status.count("accepted") - status.count("refused"),
        }


@dataclass(frozen=True)
class RoundReport:
    """Everything the run database records about a round (see :class:`RoundRecord`)."""

    server_round: int
    status: str
    reason: str | None
    sampled: int
    accepted: int
    dropped: int
    refused: int
    participants: list[ParticipantRecord]
    egress: list[EgressRecord]
    clipped_fraction: float | None
    norm_min: float | None
    norm_median: float | None
    norm_mean: float | None
    norm_max: float | None
    loss: float | None
    record_epsilon_max: float | None = None
    clip_norm: float | None = None
    noise_multiplier: float | None = None
    noise_std: float | None = None
    sample_rate: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    started_at: float = 0.0


def egress_of(
    message_type: str, reply: Message, node: int | None, secure: bool = False
) -> list[EgressRecord]:
    """Catalogue every entry of a reply as the coordinator received it.

    Each entry carries its protection from the egress catalogue
    (:func:`fedpers.client.egress.protection_of`; ``""`` when it is not listed).
    """
    out = _egress_entries(message_type, reply, node)
    return [
        replace(
            e,
            protection=protection_of(e.message_type, e.record, e.name, e.kind, e.dtype, secure)
            or "",
        )
        for e in out
    ]


def _egress_entries(message_type: str, reply: Message, node: int | None) -> list[EgressRecord]:
    out: list[EgressRecord] = []
    if reply.has_error():
        reason = reply.error.reason or ""
        return [
            EgressRecord(
                message_type, node, None, "error", "reason", "error", (), "str", len(reason)
            )
        ]
    content = reply.content
    for name, record in content.array_records.items():
        device = _device_of(name)
        for key in record:
            arr = record[key]
            out.append(
                EgressRecord(
                    message_type,
                    node,
                    device,
                    name,
                    key,
                    "array",
                    tuple(arr.shape),
                    arr.dtype,
                    len(arr.data),
                )
            )
    for name, metrics in content.metric_records.items():
        device = _device_of(name)
        for key, value in metrics.items():
            shape: tuple[int, ...] = (len(value),) if isinstance(value, list) else ()
            first = value[0] if isinstance(value, list) and value else value
            dtype = "int" if isinstance(first, int) else "float"
            out.append(
                EgressRecord(
                    message_type,
                    node,
                    device,
                    name,
                    key,
                    "metric",
                    shape,
                    dtype,
                    8 * max(1, math.prod(shape)),
                )
            )
    for name, config in content.config_records.items():
        for key, value in config.items():
            out.append(
                EgressRecord(
                    message_type,
                    node,
                    None,
                    name,
                    key,
                    "config",
                    (),
                    type(value).__name__,
                    len(str(value)),
                )
            )
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


def _summary(
    values: Sequence[float],
) -> tuple[float | None, float | None, float | None, float | None]:
    if not values:
        return None, None, None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.min()), float(np.median(arr)), float(arr.mean()), float(arr.max())


class FedPersStrategy(Strategy):
    """Sample, send, validate, sum and step: the non-private core of a fedpers round.

    Args:
        names: the shared parameters' names (wire order).
        shapes: their shapes.
        sampler: draws each round's devices.
        layout: which node hosts which device (set after the handshake).
        aggregator: sums the accepted updates (plaintext or secure).
        optimizer: the server optimiser.
        seed: the run seed (round instructions, server random streams).
        local: local training hyperparameters of a round.
        eval_local: fine-tuning hyperparameters at evaluation.
        reply_mode: whether nodes return per-device updates or their sum.
        min_participants: fewest accepted updates for a round to be applied.
        max_update_norm: rejection bound on a device's update norm when devices do not
            clip (a non-private run); with clipping the bound is the clip norm.
        eval_devices: the devices evaluated (``None``: all).
        record_level: the devices' DP-SGD settings sent with every training round
            (``None``: devices train without record-level DP).
        monitoring: ask the devices for their per-device training statistics in
            plaintext (norm, clipped, examples, loss): the explicit, logged
            ``monitoring_metrics = "plaintext"`` of a run; off, the round reports only
            what the privacy pipeline releases.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    sampler: DeviceSampler
    layout: NodeLayout
    aggregator: UpdateAggregator
    optimizer: ServerOptimizer
    seed: int
    local: LocalTrainConfig
    eval_local: LocalTrainConfig
    reply_mode: ReplyMode
    min_participants: int
    max_update_norm: float
    eval_devices: np.ndarray
    record_level: dict[str, Any] | None
    monitoring: bool
    reports: dict[int, RoundReport]

    def __init__(
        self,
        *,
        names: Sequence[str],
        shapes: Sequence[tuple[int, ...]],
        sampler: DeviceSampler,
        layout: NodeLayout,
        aggregator: UpdateAggregator,
        optimizer: ServerOptimizer,
        seed: int,
        local: LocalTrainConfig,
        eval_local: LocalTrainConfig | None = None,
        reply_mode: ReplyMode = ReplyMode.PER_DEVICE,
        min_participants: int = 1,
        max_update_norm: float = 1e4,
        eval_devices: Sequence[int] | None = None,
        record_level: Mapping[str, Any] | None = None,
        monitoring: bool = False,
    ) -> None:
        super().__init__()
        if min_participants < 1:
            raise ConfigError("min_participants must be >= 1")
        self.names = list(names)
        self.shapes = [tuple(s) for s in shapes]
        self.sampler = sampler
        self.layout = layout
        self.aggregator = aggregator
        self.optimizer = optimizer
        self.seed = seed
        self.local = local
        self.eval_local = eval_local or local
        self.reply_mode = reply_mode
        self.min_participants = min_participants
        self.max_update_norm = max_update_norm
        self.eval_devices = (
            np.arange(sampler.config.num_devices)
            if eval_devices is None
            else np.asarray(sorted(eval_devices), dtype=np.int64)
        )
        self.record_level = None if record_level is None else dict(record_level)
        self.monitoring = monitoring
        self.reports: dict[int, RoundReport] = {}
        self._pending: dict[
            int, tuple[np.ndarray, dict[int, list[int]], list[int], RoundInstructions, float]
        ] = {}
        self._current: list[np.ndarray] = []
        self._eval_egress: dict[int, list[EgressRecord]] = {}
        self._eval_status: dict[int, dict[str, int]] = {}

    # ------------------------------------------------------------------ instructions

    @property
    def _secure(self) -> bool:
        return self.aggregator.scheme != "plaintext"

    @property
    def expected_cohort(self) -> float:
        """The denominator of the mean update: ``qN``, ``m`` or ``N``."""
        return float(self.sampler.config.expected_cohort)

    def instructions(
        self, server_round: int, config: ConfigRecord | None = None
    ) -> RoundInstructions:
        """The round's instructions, with a wrapper's overrides (clip norm, noise shares)."""
        base = RoundInstructions(
            server_round=server_round,
            seed=self.seed,
            clip_norm=0.0,
            noise_share_std=0.0,
            local=self.local,
        )
        if not config:
            return base
        values = base.to_config()
        values.update({k: config[k] for k in INSTRUCTION_OVERRIDES if k in config})  # type: ignore[misc]
        return RoundInstructions.from_config(values)

    def _messages(
        self,
        message_type: str,
        server_round: int,
        arrays: ArrayRecord,
        instructions: RoundInstructions,
        groups: Mapping[int, list[int]],
        grid: Grid,
        split: str = "train",
        record_level: Mapping[str, Any] | None = None,
    ) -> list[Message]:
        config = ConfigRecord(instructions.to_config())  # type: ignore[arg-type]
        request = getattr(self.aggregator, "wire_request", None)
        secure = request() if message_type == "train" and callable(request) else None
        out = []
        for node, devices in sorted(groups.items()):
            fed = federation_record(
                devices,
                self.reply_mode,
                split,
                record_level,
                secure,
                monitoring=self.monitoring and message_type == "train",
            )
            content = RecordDict({ARRAYS: arrays, CONFIG: config, FEDERATION: fed})
            out.append(
                Message(
                    content, dst_node_id=node, message_type=message_type, group_id=str(server_round)
                )
            )
        return out

    # ------------------------------------------------------------------ train

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample the round's devices and address each hosting node."""
        self._current = arrays_of(arrays)
        sampled = self.sampler.sample()
        groups, orphans = self.layout.group(sampled.tolist())
        instructions = self.instructions(server_round, config)
        self._pending[server_round] = (sampled, groups, orphans, instructions, time.time())
        return self._messages(
            "train", server_round, arrays, instructions, groups, grid, "train", self.record_level
        )

    def _norm_bound(self, instructions: RoundInstructions) -> float:
        """Largest norm a correct update can have: ``C`` plus a wide margin for a noise share."""
        if not instructions.private:
            return self.max_update_norm
        size = sum(math.prod(s) for s in self.shapes)
        share = instructions.noise_share_std
        return float(instructions.clip_norm * (1 + 1e-4) + share * (math.sqrt(size) + 10.0))

    def collect_train(self, server_round: int, replies: Iterable[Message]) -> RoundCollection:
        """Validate and sum a round's replies; record who took part and who did not.

        Raises:
            ConfigError: when the round was not configured by this strategy.
        """
        if server_round not in self._pending:
            raise ConfigError(f"round {server_round} was not configured")
        sampled, groups, orphans, instructions, _ = self._pending[server_round]
        addressed = {d: node for node, ds in groups.items() for d in ds}
        coll = RoundCollection(server_round, sampled)
        seen: set[int] = set()
        bound = self._norm_bound(instructions)
        self.aggregator.reset(server_round)
        for d in orphans:
            coll.participants.append(ParticipantRecord(d, "dropped", "no_node_hosts_device"))
        answered: set[int] = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            coll.egress.extend(egress_of("train", reply, node, self._secure))
            if node not in groups:
                logger.warning("round %d: reply from node %s, not addressed", server_round, node)
                continue
            if node in answered:
                logger.warning("round %d: repeated reply from node %s", server_round, node)
            answered.add(node)
            if reply.has_error():
                reason = f"node_error:{reply.error.code}"
                for d in groups[node]:
                    seen.add(d)
                    coll.participants.append(ParticipantRecord(d, "failed", reason, node))
                continue
            self._collect_reply(coll, reply, node, groups[node], addressed, seen, bound)
        for node, devices in groups.items():
            for d in devices:
                if d not in seen:
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
                logger.warning("round %d: no aggregate: %s", server_round, exc)
        return coll

    def _collect_reply(
        self,
        coll: RoundCollection,
        reply: Message,
        node: int,
        devices: list[int],
        addressed: Mapping[int, int],
        seen: set[int],
        bound: float,
    ) -> None:
        content = reply.content
        status = content.metric_records.get(STATUS)
        if status is not None:
            for key, code in status.items():
                try:
                    refused, code_status = int(key), DeviceStatus(int(code))  # type: ignore[call-overload]
                except ValueError:
                    continue
                kind = "refused" if code_status.is_refusal else "dropped"
                if refused in devices and refused not in seen:
                    seen.add(refused)
                    coll.participants.append(
                        ParticipantRecord(refused, kind, code_status.reason, node)
                    )
        for name, record in content.array_records.items():
            if name == update_key(SUM):
                self._collect_sum(coll, content, record, node, devices, seen, bound)
                continue
            try:
                parsed = parse_device_key(name, "update.")
            except DataError:
                parsed = None
            if parsed is None:
                logger.warning(
                    "round %d: node %s sent an unknown record %r", coll.server_round, node, name
                )
                continue
            device = int(parsed)
            reason = self._admit(device, node, devices, addressed, seen)
            if reason is None:
                metrics = content.metric_records.get(metrics_key(device))
                reason = self.aggregator.add(str(device), record, 1, bound)
                if reason is None and metrics:
                    coll.indicator_sum += float(metrics.get("indicator", 0.0))  # type: ignore[arg-type]
                    if self.monitoring and "norm" in metrics:
                        coll.monitored = True
                        norm = float(metrics["norm"])  # type: ignore[arg-type]
                        coll.norms.append(norm)
                        coll.norm_sum += norm
                        coll.norm_max = max(coll.norm_max, norm)
                        coll.clipped += int(metrics.get("clipped", 0))  # type: ignore[call-overload]
                        coll.loss_sum += float(metrics.get("loss", 0.0))  # type: ignore[arg-type]
                        coll.n_examples += int(metrics.get("n-examples", 0))  # type: ignore[call-overload]
                        coll.note_record_epsilon(metrics.get("record-epsilon"))
            if reason in _UNEXPECTED:
                status_name = "duplicate" if reason == "duplicate" else "unexpected"
            else:
                status_name = "accepted" if reason is None else "dropped"
                seen.add(device)
            coll.participants.append(ParticipantRecord(device, status_name, reason, node))
            if reason is not None:
                logger.warning("round %d: device %s dropped: %s", coll.server_round, device, reason)

    def _admit(
        self,
        device: int,
        node: int,
        devices: list[int],
        addressed: Mapping[int, int],
        seen: set[int],
    ) -> str | None:
        if device in seen:
            return "duplicate"
        if device not in addressed:
            return "not_sampled"
        if device not in devices:
            return "not_addressed_to_node"
        return None

    def _collect_sum(
        self,
        coll: RoundCollection,
        content: RecordDict,
        record: ArrayRecord,
        node: int,
        devices: list[int],
        seen: set[int],
        bound: float,
    ) -> None:
        metrics = content.metric_records.get(metrics_key(SUM))
        if metrics is None:
            for d in devices:
                if d not in seen:
                    seen.add(d)
                    coll.participants.append(
                        ParticipantRecord(d, "dropped", "sum_without_metrics", node)
                    )
            return
        claimed = [int(d) for d in metrics.get("device-ids", [])]  # type: ignore[union-attr]
        count = int(metrics.get("count", len(claimed)))  # type: ignore[call-overload]
        repeated = [d for d in claimed if d in seen]
        for d in repeated:
            coll.participants.append(ParticipantRecord(d, "duplicate", "duplicate", node))
        bad = (
            count != len(claimed)
            or len(set(claimed)) != len(claimed)
            or any(d not in devices or d in seen for d in claimed)
        )
        reason = (
            "bad_contributor_list"
            if bad
            else self.aggregator.add(f"node-{node}", record, count, bound)
        )
        for d in claimed:
            if d in devices and d not in seen:
                seen.add(d)
                coll.participants.append(
                    ParticipantRecord(d, "accepted" if reason is None else "dropped", reason, node)
                )
        if reason is None:
            coll.indicator_sum += float(metrics.get("indicator", 0.0))  # type: ignore[arg-type]
            if self.monitoring and "norm-sum" in metrics:
                coll.monitored = True
                coll.clipped += int(metrics.get("clipped", 0))  # type: ignore[call-overload]
                coll.loss_sum += float(metrics.get("loss-sum", 0.0))  # type: ignore[arg-type]
                coll.n_examples += int(metrics.get("n-examples", 0))  # type: ignore[call-overload]
                coll.norm_sum += float(metrics.get("norm-sum", 0.0))  # type: ignore[arg-type]
                coll.norm_max = max(coll.norm_max, float(metrics.get("norm-max", 0.0)))  # type: ignore[arg-type]
                coll.note_record_epsilon(metrics.get("record-epsilon-max"))
        else:
            logger.warning(
                "round %d: sum from node %s dropped: %s", coll.server_round, node, reason
            )

    def apply_mean(self, server_round: int, mean: list[np.ndarray]) -> list[np.ndarray]:
        """Pipeline step 10: the server optimiser's step from the current global model."""
        new: list[np.ndarray] = self.optimizer.step(self._current, mean)
        return new

    def report(
        self, coll: RoundCollection, status: str, reason: str | None = None, **privacy: Any
    ) -> RoundReport:
        """Summarise a collected round (and store it in :attr:`reports`)."""
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
        pending = self._pending.pop(coll.server_round, None)  # the round is over
        started = pending[4] if pending is not None else time.time()
        rep = RoundReport(
            server_round=coll.server_round,
            status=status,
            reason=reason,
            sampled=len(coll.sampled),
            accepted=counts["accepted"],
            dropped=counts["dropped"],
            refused=counts["refused"],
            participants=coll.participants,
            egress=coll.egress,
            clipped_fraction=clipped_fraction,
            norm_min=n_min,
            norm_median=n_med,
            norm_mean=n_mean,
            norm_max=n_max,
            loss=coll.loss_sum / coll.accepted if monitored else None,
            record_epsilon_max=coll.record_epsilon_max,
            sample_rate=self.sampler.config.rate,
            started_at=started,
        )
        rep = replace(rep, **privacy) if privacy else rep
        self.reports[coll.server_round] = rep
        return rep

    def skip_reason(self, coll: RoundCollection) -> str | None:
        """Why the round cannot be applied (too few accepted updates), else ``None``."""
        if coll.aggregation_error is not None:
            return coll.aggregation_error
        if coll.accepted < self.min_participants or coll.total is None:
            return f"too_few_participants ({coll.accepted} < {self.min_participants})"
        return None

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Collect, average over the expected cohort (no noise) and step."""
        coll = self.collect_train(server_round, replies)
        skip = self.skip_reason(coll)
        if skip is not None:
            rep = self.report(coll, "skipped", skip)
            return None, train_metrics(rep)
        assert coll.total is not None
        mean = finalize_aggregate(
            coll.total,
            central_noise_std=0.0,
            denominator=self.expected_cohort,
            rng=server_rng(self.seed, server_round),
        )
        new = self.apply_mean(server_round, mean)
        rep = self.report(coll, "completed")
        return ArrayRecord(
            dict(zip(self.names, _arrays_as_record_values(new), strict=True))
        ), train_metrics(rep)

    # ------------------------------------------------------------------ evaluate

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Address every evaluated device's node (split from ``config['split']``)."""
        split = str(config.get("split", "test")) if config else "test"
        groups, _ = self.layout.group(self.eval_devices.tolist())
        instructions = RoundInstructions(
            server_round=server_round,
            seed=self.seed,
            clip_norm=0.0,
            noise_share_std=0.0,
            local=self.eval_local,
        )
        return self._messages("evaluate", server_round, arrays, instructions, groups, grid, split)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Means of the devices' metrics (sums and counts from every node)."""
        sums = dict.fromkeys(EVAL_KEYS, 0.0)
        count = 0
        egress: list[EgressRecord] = []
        statuses: dict[str, int] = defaultdict(int)
        for reply in replies:
            egress.extend(egress_of("evaluate", reply, reply.metadata.src_node_id, self._secure))
            if reply.has_error() or EVAL not in reply.content.metric_records:
                continue
            rec = reply.content.metric_records[EVAL]
            n = int(rec.get("count", 0))  # type: ignore[call-overload]
            values = {k: float(rec.get(k, math.nan)) for k in EVAL_KEYS}  # type: ignore[arg-type]
            if n <= 0 or not all(math.isfinite(v) and 0 <= v <= n for v in values.values()):
                continue
            count += n
            for k in EVAL_KEYS:
                sums[k] += values[k]
            status = reply.content.metric_records.get(STATUS)
            for code in (status or {}).values():
                try:
                    statuses[DeviceStatus(int(code)).reason] += 1  # type: ignore[call-overload]
                except ValueError:
                    continue
        self._eval_egress[server_round] = egress
        self._eval_status[server_round] = dict(statuses)
        if count == 0:
            return None
        out: dict[str, float | int] = {k: v / count for k, v in sums.items()}
        out["eval_devices"] = count
        return MetricRecord(out)  # type: ignore[arg-type]

    def pop_eval_egress(self, server_round: int) -> list[EgressRecord]:
        """The evaluation payloads catalogued for ``server_round`` (then forgotten)."""
        return self._eval_egress.pop(server_round, [])

    def summary(self) -> None:
        """Log the strategy's configuration."""
        logger.info(
            "FedPersStrategy: %s sampling, expected cohort %.1f, reply %s, optimizer %s",
            self.sampler.config.method.value,
            self.expected_cohort,
            self.reply_mode.value,
            type(self.optimizer).__name__,
        )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Sampler and optimiser state for checkpoints."""
        return {
            "sampler": self.sampler.state_dict(),
            "optimizer": self.optimizer.state_dict(include_arrays=False),
            "optimizer_arrays": list(self.optimizer.arrays()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.sampler.load_state_dict(state["sampler"])
        self.optimizer.load_state_dict(
            state["optimizer"], arrays=list(state["optimizer_arrays"]) or None
        )


def _arrays_as_record_values(arrays: Sequence[np.ndarray]) -> list[Any]:
    from flwr.app import Array

    return [Array(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays]


def train_metrics(rep: RoundReport) -> MetricRecord:
    """The numeric summary ``aggregate_train`` returns to Flower."""
    values: dict[str, float | int] = {
        "sampled": rep.sampled,
        "accepted": rep.accepted,
        "dropped": rep.dropped,
        "refused": rep.refused,
    }
    if rep.loss is not None:
        values["loss"] = rep.loss
    return MetricRecord(values)  # type: ignore[arg-type]
