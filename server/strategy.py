"""The fedpers Flower strategy: sample devices, send the model, validate, sum, step.

One round of :class:`FedPersStrategy` (non-private on its own; wrap it in
:class:`~fedpers.server.dp_wrapper.UserLevelDP` for user-level DP):

1. :meth:`~FedPersStrategy.configure_train` samples devices
   (:mod:`fedpers.server.sampling`), groups them by the node that hosts them
   (:class:`~fedpers.server.node_layout.NodeLayout`: one device per node, or cohorts of
   virtual devices per node) and sends each node the global shared parameters, the round
   instructions (:class:`~fedpers.client.device_round.RoundInstructions`) and its
   :class:`~fedpers.client.protocol.NodeRequest`;
2. :meth:`~FedPersStrategy.collect_train` validates and sums the replies
   (:class:`~fedpers.server.collect.RoundCollector`: who took part, who did not and why,
   and the egress catalogue of every payload);
3. :func:`~fedpers.privacy.dp.pipeline.finalize_aggregate` divides the sum by the
   expected cohort size (with no noise here; the DP wrapper adds it);
4. :meth:`~FedPersStrategy.apply_mean` runs the server optimiser.

A round with fewer than ``min_participants`` accepted updates is *skipped*: the model is
unchanged, nothing is released, and the report says so.

What happened is kept in :attr:`FedPersStrategy.reports` (one
:class:`~fedpers.server.rundb.RoundReport` per round) for the run database; the strategy
itself never writes files.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpers.client.device_round import RoundInstructions
from fedpers.client.protocol import EVAL_KEYS, EvaluationSums, NodeRequest, ReplyMode
from fedpers.client.training.local import LocalTrainConfig
from fedpers.client.wire import (
    ARRAYS,
    CONFIG,
    EVAL,
    FEDERATION,
    array_record,
    arrays_of,
    request_record,
)
from fedpers.privacy.dp.noise import server_rng
from fedpers.privacy.dp.pipeline import finalize_aggregate
from fedpers.privacy.errors import ConfigError, DataError
from fedpers.server.aggregation import UpdateAggregator
from fedpers.server.collect import (
    NON_PRIVATE,
    RoundCollection,
    RoundCollector,
    RoundPlan,
    RoundPrivacy,
    egress_of,
    round_report,
)
from fedpers.server.node_layout import NodeLayout
from fedpers.server.optimizers import ServerOptimizer
from fedpers.server.rundb import EgressRecord, RoundReport
from fedpers.server.sampling import DeviceSampler
from fedpers.server.secure_aggregation import CkksAggregator, NoisePlan

__all__ = [
    "INSTRUCTION_OVERRIDES",
    "FedPersStrategy",
    "train_metrics",
]

logger = logging.getLogger(__name__)

INSTRUCTION_OVERRIDES = ("clip_norm", "noise_share_std", "indicator_noise_share_std")
"""Round-instruction keys a wrapper may set through the ``config`` of ``configure_train``."""


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
        self._pending: dict[int, RoundPlan] = {}
        self._current: list[np.ndarray] = []
        self._eval_egress: dict[int, list[EgressRecord]] = {}

    # ------------------------------------------------------------------ instructions

    @property
    def secure(self) -> bool:
        """Whether updates arrive encrypted (secure aggregation)."""
        return self.aggregator.scheme != "plaintext"

    @property
    def expected_cohort(self) -> float:
        """The denominator of the mean update: ``qN``, ``m`` or ``N``."""
        return float(self.sampler.config.expected_cohort)

    def delegate_noise(self, plan: Callable[[int], NoisePlan]) -> bool:
        """Let the key holder add each round's noise before the sum leaves it.

        Args:
            plan: the round's noise for a given number of accepted contributions.

        Returns:
            Whether the aggregator takes the plan (secure aggregation only); when it
            does not, the caller adds the noise itself.
        """
        if not isinstance(self.aggregator, CkksAggregator):
            return False
        self.aggregator.noise_plan = plan
        return True

    def instructions(
        self, server_round: int, config: ConfigRecord | None = None
    ) -> RoundInstructions:
        """The round's instructions, with a wrapper's overrides (clip norm, noise shares)."""
        base = self._base_instructions(server_round, self.local)
        if not config:
            return base
        overrides = {k: config[k] for k in INSTRUCTION_OVERRIDES if k in config}
        return RoundInstructions.from_config({**base.to_config(), **overrides})

    def _base_instructions(self, server_round: int, local: LocalTrainConfig) -> RoundInstructions:
        return RoundInstructions(
            server_round=server_round,
            seed=self.seed,
            clip_norm=0.0,
            noise_share_std=0.0,
            local=local,
        )

    def _messages(
        self,
        message_type: str,
        server_round: int,
        arrays: ArrayRecord,
        instructions: RoundInstructions,
        groups: Mapping[int, list[int]],
        split: str,
    ) -> list[Message]:
        config = ConfigRecord(instructions.to_config())
        training = message_type == "train"
        secure = (
            self.aggregator.wire_request()
            if training and isinstance(self.aggregator, CkksAggregator)
            else None
        )
        out = []
        for node, devices in sorted(groups.items()):
            fed = NodeRequest(
                device_ids=tuple(devices),
                reply=self.reply_mode,
                split=split,
                record_level=self.record_level if training else None,
                secure=secure,
                monitoring=self.monitoring and training,
            )
            content = RecordDict({ARRAYS: arrays, CONFIG: config, FEDERATION: request_record(fed)})
            out.append(
                Message(
                    content, dst_node_id=node, message_type=message_type, group_id=str(server_round)
                )
            )
        return out

    def model_record(self, arrays: Sequence[np.ndarray]) -> ArrayRecord:
        """The global shared parameters as the record Flower passes between rounds."""
        return array_record(self.names, arrays)

    # ------------------------------------------------------------------ train

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample the round's devices and address each hosting node."""
        self._current = arrays_of(arrays)
        sampled = self.sampler.sample()
        groups, orphans = self.layout.group(sampled.tolist())
        instructions = self.instructions(server_round, config)
        self._pending[server_round] = RoundPlan(sampled, groups, orphans, instructions, time.time())
        return self._messages("train", server_round, arrays, instructions, groups, "train")

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
        plan = self._pending[server_round]
        collector = RoundCollector(
            server_round,
            plan,
            self.aggregator,
            self._norm_bound(plan.instructions),
            monitoring=self.monitoring,
            secure=self.secure,
        )
        return collector.collect(replies)

    def apply_mean(self, server_round: int, mean: list[np.ndarray]) -> list[np.ndarray]:
        """Pipeline step 10: the server optimiser's step from the current global model."""
        new: list[np.ndarray] = self.optimizer.step(self._current, mean)
        return new

    def report(
        self,
        coll: RoundCollection,
        status: str,
        reason: str | None = None,
        privacy: RoundPrivacy = NON_PRIVATE,
    ) -> RoundReport:
        """Summarise a collected round (and store it in :attr:`reports`)."""
        plan = self._pending.pop(coll.server_round, None)  # the round is over
        rep = round_report(
            coll,
            status,
            reason,
            sample_rate=self.sampler.config.rate,
            started_at=plan.started_at if plan is not None else time.time(),
            privacy=privacy,
        )
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
        if skip is not None or coll.total is None:
            rep = self.report(coll, "skipped", skip)
            return None, train_metrics(rep)
        mean = finalize_aggregate(
            coll.total,
            central_noise_std=0.0,
            denominator=self.expected_cohort,
            rng=server_rng(self.seed, server_round),
        )
        new = self.apply_mean(server_round, mean)
        rep = self.report(coll, "completed")
        return self.model_record(new), train_metrics(rep)

    # ------------------------------------------------------------------ evaluate

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Address every evaluated device's node (split from ``config['split']``)."""
        split = str(config.get("split", "test")) if config else "test"
        groups, _ = self.layout.group(self.eval_devices.tolist())
        instructions = self._base_instructions(server_round, self.eval_local)
        return self._messages("evaluate", server_round, arrays, instructions, groups, split)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Means of the devices' metrics (sums and counts from every node).

        A node whose ``eval`` record is malformed or implausible is left out.
        """
        sums = dict.fromkeys(EVAL_KEYS, 0.0)
        count = 0
        egress: list[EgressRecord] = []
        for reply in replies:
            egress.extend(egress_of("evaluate", reply, reply.metadata.src_node_id, self.secure))
            if reply.has_error() or EVAL not in reply.content.metric_records:
                continue
            try:
                result = EvaluationSums.decode(dict(reply.content.metric_records[EVAL]))
            except DataError:
                continue
            if not result.plausible:
                continue
            count += result.count
            for k in EVAL_KEYS:
                sums[k] += result.sums[k]
        self._eval_egress[server_round] = egress
        if count == 0:
            return None
        out: dict[str, float | int] = {k: v / count for k, v in sums.items()}
        out["eval_devices"] = count
        return MetricRecord(out)

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


def train_metrics(rep: RoundReport) -> MetricRecord:
    """The numeric summary ``aggregate_train`` returns to Flower."""
    record = rep.record
    values: dict[str, float | int] = {
        "sampled": record.sampled,
        "accepted": record.participants,
        "dropped": record.dropped,
        "refused": record.refused,
    }
    if "loss" in record.metrics:
        values["loss"] = record.metrics["loss"]
    return MetricRecord(values)
