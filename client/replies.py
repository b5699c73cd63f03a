"""A node's answers to the coordinator's ``train``, ``evaluate`` and ``query`` messages.

A round on a node:

1. read the global shared parameters (``arrays``), the round instructions (``config``,
   :class:`~fedpers.client.device_round.RoundInstructions`) and what the coordinator asks
   of this node (``fedpers``, :class:`~fedpers.client.protocol.NodeRequest`);
2. load the requested devices it hosts and check their gates
   (:mod:`fedpers.client.hosted_devices`);
3. train the ready devices and privatise each update (:mod:`fedpers.client.node_training`);
4. reply with each device's update, or with their sum (:mod:`fedpers.client.wire`);
   per-device training statistics (norm, clipped, examples, loss) only when the run set
   the explicit monitoring flag (:mod:`fedpers.client.egress` lists what leaves); when
   the coordinator asks for secure aggregation, each update (or the node's sum, encrypted
   once with its count) travels as CKKS ciphertext bytes under the enrolled public
   context (``secagg-context``), never in plaintext.

Replies hold only ArrayRecords with the shared parameters' names and shapes and
MetricRecords of numbers (:mod:`fedpers.client.protocol`): never events, history item
identifiers or user vectors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from fedpers.client.device_round import DeviceContribution, RoundInstructions, evaluation_seed
from fedpers.client.hosted_devices import (
    ClientSettings,
    holdout_items,
    hosted_devices,
    item_features,
    load_devices,
)
from fedpers.client.model import ModelConfig
from fedpers.client.node_training import (
    GlobalRound,
    hosted_cohort,
    persist,
    train_cohort,
    train_record_level,
)
from fedpers.client.protocol import (
    EVAL_KEYS,
    DeviceMetrics,
    DeviceStatistics,
    DeviceStatus,
    EvaluationSums,
    NodeInfo,
    NodeRequest,
    ReplyMode,
    SumMetrics,
    SumStatistics,
)
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import evaluate_devices
from fedpers.client.wire import (
    ARRAYS,
    CONFIG,
    EVAL,
    NODE,
    STATUS,
    SUM,
    array_record,
    arrays_of,
    ciphertext_record,
    metrics_key,
    request_of,
    status_record,
    update_key,
)
from fedpers.privacy.dp.clipping import flatten
from fedpers.privacy.errors import ConfigError, DataError, SecureAggregationError
from fedpers.privacy.secagg import DeviceEncryptor, load_public_context

__all__ = [
    "evaluate_message",
    "hello_message",
    "model_config_from_arrays",
    "train_message",
]

logger = logging.getLogger(__name__)


def model_config_from_arrays(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ModelConfig:
    """The model shape implied by the shared arrays the coordinator sent.

    Raises:
        DataError: when the arrays are not the model family's shared parameters.
    """
    shapes = {n: tuple(a.shape) for n, a in zip(names, arrays, strict=True)}
    emb = shapes.get("item_embedding")
    if emb is None or len(emb) != 2 or shapes.get("item_bias") != (emb[0],):
        raise DataError(f"unexpected shared arrays {shapes}")
    tower = shapes.get("feature_tower")
    return ModelConfig(n_items=emb[0], dim=emb[1], n_item_features=0 if tower is None else tower[0])


@lru_cache(maxsize=2)
def _encryptor_for(path: str) -> DeviceEncryptor:
    """The encryptor over the public context at ``path`` (loaded once per process)."""
    return DeviceEncryptor(load_public_context(path))


def _encryptor(settings: ClientSettings, secure: tuple[str, str]) -> DeviceEncryptor:
    """The encryptor a secure-aggregation round needs, checked against its key id.

    Raises:
        ConfigError: unknown scheme, no public context enrolled, or another key set than
            the coordinator's.
        SecureAggregationError: the enrolled context cannot be loaded or holds a secret key.
    """
    scheme, key_id = secure
    if scheme != "ckks":
        raise ConfigError(f"the coordinator asks for secure aggregation scheme {scheme!r}")
    if not settings.secagg_context:
        raise ConfigError("secure aggregation requested but no public context is enrolled")
    encryptor = _encryptor_for(settings.secagg_context)
    if encryptor.holds_secret_key:
        raise SecureAggregationError("a device must be enrolled with the public context only")
    if encryptor.key_id != key_id:
        raise ConfigError(
            f"the coordinator's key id {key_id[:12]}… is not the enrolled {encryptor.key_id[:12]}…"
        )
    return encryptor


def _device_metrics(
    c: DeviceContribution, record_epsilon: float | None, monitoring: bool
) -> DeviceMetrics:
    """A device's metrics: adaptive clipping's indicator, statistics only if asked.

    Without the run's monitoring flag nothing but the indicator leaves the device (see
    :mod:`fedpers.client.egress`).
    """
    statistics = (
        DeviceStatistics(c.norm, bool(c.clipped), c.n_examples, c.loss, record_epsilon)
        if monitoring
        else None
    )
    return DeviceMetrics(c.indicator, statistics)


def _sum_reply(
    names: Sequence[str],
    contributions: Sequence[DeviceContribution],
    record_epsilon: Mapping[int, float],
    encryptor: DeviceEncryptor | None = None,
    monitoring: bool = False,
) -> dict[str, ArrayRecord | MetricRecord]:
    """The node's sum of its devices' privatized updates, encrypted once when asked.

    With secure aggregation the node encrypts the plaintext sum of its ``k`` devices once
    (``count = k``), not each device: a simulation node trains all its virtual devices and
    sees their updates anyway, and one encryption per node instead of per device keeps a
    943-device round cheap. The coordinator still sees only a ciphertext of a sum.
    The metric record holds the count and device ids (participation), the summed
    indicator under adaptive clipping, and the summed statistics only with ``monitoring``.
    """
    totals = [np.zeros(a.shape, dtype=np.float64) for a in contributions[0].arrays]
    for c in contributions:
        for total, array in zip(totals, c.arrays, strict=True):
            total += array
    statistics = None
    if monitoring:
        norms = [float(c.norm) for c in contributions]
        finite = [e for e in record_epsilon.values() if math.isfinite(e)]
        statistics = SumStatistics(
            clipped=sum(int(c.clipped) for c in contributions),
            n_examples=sum(int(c.n_examples) for c in contributions),
            loss_sum=float(sum(c.loss for c in contributions)),
            norm_sum=float(sum(norms)),
            norm_max=float(max(norms)),
            record_epsilon_max=max(finite) if finite else None,
        )
    indicators = [c.indicator for c in contributions if c.indicator is not None]
    metrics = SumMetrics(
        count=len(contributions),
        device_ids=tuple(int(c.device_id) for c in contributions),
        indicator=float(sum(indicators)) if indicators else None,
        statistics=statistics,
    )
    if encryptor is None:
        update = array_record(names, [t.astype(np.float32) for t in totals])
    else:
        flat = flatten(totals)
        ids = [str(int(c.device_id)) for c in contributions]
        payload = encryptor.encrypt(flat, count=len(ids), contributors=ids)
        update = ciphertext_record(payload.to_bytes())
    return {update_key(SUM): update, metrics_key(SUM): MetricRecord(metrics.encode())}


@dataclass(frozen=True)
class _RoundInput:
    """What a ``train`` or ``evaluate`` message gives a node, read once."""

    settings: ClientSettings
    names: list[str]
    global_arrays: list[np.ndarray]
    model_config: ModelConfig
    instructions: RoundInstructions
    request: NodeRequest
    hosted: list[int]
    statuses: dict[int, DeviceStatus]


def _read_round(message: Message, context: Context, settings: ClientSettings) -> _RoundInput:
    """The global arrays, round instructions and request of a coordinator message.

    Raises:
        ConfigError: when the message lacks the arrays or the round instructions.
        DataError: when its ``fedpers`` record is malformed.
    """
    content = message.content
    if ARRAYS not in content.array_records or CONFIG not in content.config_records:
        raise ConfigError(
            f"{message.metadata.message_type} message lacks the global arrays or the "
            "round instructions"
        )
    settings = settings.resolve(context.node_config)
    record = content.array_records[ARRAYS]
    names = list(record.keys())
    global_arrays = arrays_of(record)
    request = request_of(content)
    hosted, statuses = hosted_devices(request.device_ids, context, settings)
    return _RoundInput(
        settings=settings,
        names=names,
        global_arrays=global_arrays,
        model_config=model_config_from_arrays(names, global_arrays),
        instructions=RoundInstructions.from_config(dict(content.config_records[CONFIG])),
        request=request,
        hosted=hosted,
        statuses=statuses,
    )


def _reply(message: Message, out: dict[str, Any], statuses: Mapping[int, DeviceStatus]) -> Message:
    if statuses:
        out[STATUS] = status_record(statuses)
    return Message(RecordDict(out), reply_to=message)


def train_message(message: Message, context: Context, settings: ClientSettings) -> Message:
    """Handle one ``train`` message (see the module docstring).

    Raises:
        ConfigError: when the message lacks the arrays, instructions or device list.
    """
    inp = _read_round(message, context, settings)
    settings, request, instructions = inp.settings, inp.request, inp.instructions
    model_config, statuses = inp.model_config, inp.statuses
    encryptor = _encryptor(settings, request.secure) if request.secure is not None else None
    features = item_features(settings.devices_dir) if model_config.n_item_features else None
    ready, refused = load_devices(
        inp.hosted, context, settings, instructions.seed, model_config.dim
    )
    statuses.update(refused)
    record_epsilon: dict[int, float] = {}
    global_round = GlobalRound(
        GlobalParameters(inp.global_arrays, model_config, features), instructions
    )
    if request.record_level is None:
        contributions, failed = train_cohort(ready, global_round, settings.noise_entropy)
    else:
        contributions, failed, record_epsilon = train_record_level(
            ready,
            global_round,
            dict(request.record_level),
            settings.record_epsilon_budget,
            settings.noise_entropy,
        )
    statuses.update(failed)
    persist(ready, contributions)
    out: dict[str, Any] = {}
    if request.reply is ReplyMode.SUM and contributions:
        out.update(
            _sum_reply(inp.names, contributions, record_epsilon, encryptor, request.monitoring)
        )
    else:
        for c in contributions:
            device = int(c.device_id)
            if encryptor is None:
                out[update_key(device)] = array_record(inp.names, c.arrays)
            else:
                try:
                    payload = encryptor.encrypt(flatten(c.arrays), contributors=[str(device)])
                except SecureAggregationError as exc:
                    logger.warning("device %s: encryption failed: %s", device, exc)
                    statuses[device] = DeviceStatus.FAILED
                    continue
                out[update_key(device)] = ciphertext_record(payload.to_bytes())
            metrics = _device_metrics(c, record_epsilon.get(device), request.monitoring).encode()
            if metrics:
                out[metrics_key(device)] = MetricRecord(metrics)
    return _reply(message, out, statuses)


def evaluate_message(message: Message, context: Context, settings: ClientSettings) -> Message:
    """Handle one ``evaluate`` message: global model plus local fine-tuning per device.

    The reply carries only ``count`` and the sums of the per-device metrics.

    Raises:
        ConfigError: when the message lacks the arrays or instructions.
    """
    inp = _read_round(message, context, settings)
    settings, instructions, model_config = inp.settings, inp.instructions, inp.model_config
    target = inp.request.split
    if target not in ("test", "valid"):
        raise ConfigError(f"evaluation split must be 'test' or 'valid', got {target!r}")
    ready, refused = load_devices(
        inp.hosted, context, settings, instructions.seed, model_config.dim, training=False
    )
    statuses = {**inp.statuses, **refused}
    sums = dict.fromkeys(EVAL_KEYS, 0.0)
    count = 0
    if ready:
        holdout = holdout_items(settings.devices_dir)
        ids = np.array([d.device_id for d in ready], dtype=np.int64)
        held = np.asarray(holdout[target][ids], dtype=np.int64)
        valid = np.asarray(holdout["valid"][ids], dtype=np.int64)
        exclude = [
            np.append(d.items, v) if target == "test" and v >= 0 else d.items
            for d, v in zip(ready, valid, strict=True)
        ]
        features = item_features(settings.devices_dir) if model_config.n_item_features else None
        result = evaluate_devices(
            GlobalParameters(inp.global_arrays, model_config, features),
            hosted_cohort(ready),
            held,
            np.asarray(holdout["negatives"][ids], dtype=np.int64),
            exclude,
            instructions.local,
            [evaluation_seed(instructions.seed, instructions.server_round, int(i)) for i in ids],
        )
        scored = held >= 0
        count = int(scored.sum())
        for key in EVAL_KEYS:
            values = np.asarray(result[key], dtype=np.float64)[scored]
            sums[key] = float(values.sum()) if values.size else 0.0
    out: dict[str, Any] = {EVAL: MetricRecord(EvaluationSums(count, sums).encode())}
    return _reply(message, out, statuses)


def hello_message(message: Message, context: Context, settings: ClientSettings) -> Message:
    """Handle the coordinator's ``query`` handshake: which partition this node is.

    The reply is numeric: ``partition-id``, ``num-partitions`` and, in node mode,
    ``device-id`` (participation is visible to the coordinator anyway).
    """
    settings = settings.resolve(context.node_config)
    config = context.node_config
    partition = int(config.get("partition-id", -1))
    info = NodeInfo(
        partition_id=partition,
        num_partitions=int(config.get("num-partitions", 1)),
        device_id=int(config.get("device-id", partition)) if settings.mode == "node" else -1,
    )
    return Message(RecordDict({NODE: MetricRecord(info.encode())}), reply_to=message)
