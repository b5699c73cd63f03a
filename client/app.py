"""The Flower ClientApp (Message API): a node hosting one device, or a cohort of devices.

Each device keeps everything private in its own :class:`~fedpers.client.store.EventStore`
(events, consent, private user vector, ledger). A round on a node:

1. read the global shared parameters (``arrays``) and the round instructions
   (``config``, :class:`~fedpers.client.device_round.RoundInstructions`) and which
   devices the coordinator sampled on this node (``fedpers/device-ids``);
2. for each device: refuse with a reason, sending no update, when P10 is not granted,
   the Global Privacy Control signal is set or the device's record-level budget is
   spent (:mod:`fedpers.privacy.consent`); otherwise load its history and private user
   vector;
3. train every ready device at once and privatise each update
   (:func:`~fedpers.client.device_round.run_device_rounds`: local training, clipping,
   noise share, all per device, with per-device random streams);
4. persist each new private user vector to its device's store (never sent);
5. reply with each device's update, or with their sum (:mod:`fedpers.client.wire`);
   per-device training statistics (norm, clipped, examples, loss) only when the run set
   the explicit monitoring flag (:mod:`fedpers.client.egress` lists what leaves);
   when the coordinator asks for secure aggregation, each
   update (or the node's sum, encrypted once with its count) travels as CKKS ciphertext
   bytes under the enrolled public context (``secagg-context``), never in plaintext.

**Node mode**: one device per node; the device is ``node_config["device-id"]`` or the
simulation's ``partition-id``, its store ``node_config["device-store"]`` or the one in
``devices-dir``. **Cohort mode**: the node hosts many virtual devices; each still has its
own store, private state, clipping and noise share, so the mathematics is the same.

Replies hold only ArrayRecords with the shared parameters' names and shapes and
MetricRecords of numbers: never events, history item identifiers or user vectors.

Open stores are cached per process (bounded LRU), because opening and closing a SQLite
file in WAL mode costs milliseconds of ``fsync`` per device and round; nothing private is
kept in ``Context.state``, which Flower ships with every message.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedpers.client.device_round import (
    NO_CLIP,
    DeviceContribution,
    RoundInstructions,
    evaluation_seed,
    initial_user_vector,
    run_device_rounds,
    training_seed,
)
from fedpers.client.model import ModelConfig
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
from fedpers.client.store import EventStore, LedgerEntry
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
from fedpers.privacy.consent import may_train
from fedpers.privacy.dp.accounting import record_level_epsilon
from fedpers.privacy.dp.clipping import flatten
from fedpers.privacy.dp.noise import device_rng
from fedpers.privacy.dp.pipeline import privatize_device_update
from fedpers.privacy.errors import (
    BudgetExhaustedError,
    ConfigError,
    ConsentError,
    DataError,
    FedpersError,
    SecureAggregationError,
    StoreError,
)
from fedpers.privacy.secagg import DeviceEncryptor, load_public_context

__all__ = [
    "CATALOGUE_FILE",
    "HOLDOUT_DIR",
    "ClientSettings",
    "StorePool",
    "app",
    "device_store_path",
    "make_client_app",
    "model_config_from_arrays",
]

logger = logging.getLogger(__name__)

CATALOGUE_FILE = "catalogue.npz"
"""Public catalogue data of a devices folder: ``item_features`` (optional)."""
HOLDOUT_DIR = "holdout"
"""Simulation only: each device's held-out items (``test.npy``, ``valid.npy``,
``negatives.npy``, indexed by device id) for the evaluation protocol."""


def device_store_path(devices_dir: str | Path, device_id: int) -> Path:
    """The store file of ``device_id`` inside a devices folder (``device-0000042.db``)."""
    return Path(devices_dir) / f"device-{int(device_id):07d}.db"


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


@dataclass(frozen=True)
class ClientSettings:
    """Where a node finds its devices and how it treats them.

    Attributes:
        devices_dir: folder holding the device stores (:func:`device_store_path`), the
            public ``catalogue.npz`` and, in simulation, ``holdout/``.
        mode: ``"cohort"`` (any device the coordinator names, from ``devices_dir``) or
            ``"node"`` (exactly one device).
        max_open_stores: bound of the per-process cache of open stores.
        record_epsilon_budget: the device's record-level (DP-SGD) budget; a device whose
            ledger shows it spent refuses to train. ``None``: no record-level budget.
        provision: optional ``provision(device_id)`` creating a device's store on first
            use (a simulation of devices enrolling lazily); ``None``: a missing store
            is reported as unavailable.
        secagg_context: path of the CKKS *public* context (``public.ctx`` or the key-set
            folder) the devices encrypt their updates under when the coordinator asks for
            secure aggregation; ``""``: none enrolled (such a request fails the node).
    """

    devices_dir: str = ""
    mode: str = "cohort"
    max_open_stores: int = 1024
    record_epsilon_budget: float | None = None
    provision: Callable[[int], None] | None = None
    secagg_context: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("cohort", "node"):
            raise ConfigError(f"mode must be 'cohort' or 'node', got {self.mode!r}")
        if self.max_open_stores < 1:
            raise ConfigError("max_open_stores must be >= 1")

    def resolve(self, node_config: Mapping[str, Any]) -> ClientSettings:
        """These settings overridden by a node's config (``devices-dir``, ``mode``)."""
        changes: dict[str, Any] = {}
        if "devices-dir" in node_config:
            changes["devices_dir"] = str(node_config["devices-dir"])
        if "mode" in node_config:
            changes["mode"] = str(node_config["mode"])
        if "record-epsilon-budget" in node_config:
            changes["record_epsilon_budget"] = float(node_config["record-epsilon-budget"])
        if "secagg-context" in node_config:
            changes["secagg_context"] = str(node_config["secagg-context"])
        return replace(self, **changes) if changes else self


class StorePool:
    """A bounded LRU of open device stores, one per process.

    Example:
        >>> pool = StorePool(2)
        >>> len(pool)
        0
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._stores: OrderedDict[Path, EventStore] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stores)

    def get(self, path: Path) -> EventStore:
        """The open store at ``path`` (opened on first use, least recently used evicted).

        Raises:
            StoreError: when the store cannot be opened.
        """
        with self._lock:
            store = self._stores.get(path)
            if store is not None:
                self._stores.move_to_end(path)
                return store
            store = EventStore.open(path)
            self._stores[path] = store
            while len(self._stores) > self.capacity:
                _, old = self._stores.popitem(last=False)
                old.close()
            return store

    def discard(self, path: Path) -> None:
        """Close and forget the store at ``path`` (after an error on it)."""
        with self._lock:
            store = self._stores.pop(path, None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        """Close every cached store."""
        with self._lock:
            stores = list(self._stores.values())
            self._stores.clear()
        for store in stores:
            store.close()


_POOL = StorePool(1024)


@lru_cache(maxsize=4)
def _item_features(devices_dir: str) -> np.ndarray | None:
    path = Path(devices_dir) / CATALOGUE_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return (
            np.asarray(data["item_features"], dtype=np.float32) if "item_features" in data else None
        )


@lru_cache(maxsize=4)
def _holdout(devices_dir: str) -> dict[str, np.ndarray]:
    folder = Path(devices_dir) / HOLDOUT_DIR
    if not folder.is_dir():
        raise DataError(f"{folder}: no held-out items for evaluation")
    return {
        name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        for name in ("test", "valid", "negatives")
    }


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


@dataclass
class _Device:
    """A device ready to train or evaluate (its inputs, read from its own store)."""

    device_id: int
    store: EventStore
    items: np.ndarray
    user_vector: np.ndarray


def _hosted_devices(
    requested: Sequence[int], context: Context, settings: ClientSettings
) -> tuple[list[int], dict[int, DeviceStatus]]:
    """The requested devices this node hosts, and ``NOT_HOSTED`` for the others."""
    if settings.mode == "cohort":
        return list(dict.fromkeys(requested)), {}
    own = int(context.node_config.get("device-id", context.node_config.get("partition-id", -1)))
    hosted = [d for d in dict.fromkeys(requested) if d == own]
    return hosted, {d: DeviceStatus.NOT_HOSTED for d in requested if d != own}


def _store_path(device_id: int, context: Context, settings: ClientSettings) -> Path:
    if settings.mode == "node" and "device-store" in context.node_config:
        return Path(str(context.node_config["device-store"]))
    return device_store_path(settings.devices_dir, device_id)


def _open(device_id: int, context: Context, settings: ClientSettings) -> EventStore:
    path = _store_path(device_id, context, settings)
    if not path.exists() and settings.provision is not None:
        settings.provision(device_id)
    return _POOL.get(path)


def _load_device(
    device_id: int,
    context: Context,
    settings: ClientSettings,
    seed: int,
    dim: int,
    training: bool = True,
) -> _Device | DeviceStatus:
    """Open a device's store and check its gates; the device's inputs or why not.

    Both training and evaluation replies are derived from the device's behaviour, so
    both need P10 and no GPC; only training spends record-level budget.
    """
    try:
        store = _open(device_id, context, settings)
        consent = store.load_consent()
        if consent.gpc:
            return DeviceStatus.GPC
        if not may_train(consent):
            return DeviceStatus.NO_CONSENT
        budget = settings.record_epsilon_budget
        if training and budget is not None and store.epsilon_spent() >= budget:
            return DeviceStatus.BUDGET_SPENT
        items = store.history_indices()
        if items.size == 0:
            return DeviceStatus.NO_DATA
        vector = store.load_user_vector()
    except StoreError as exc:
        logger.warning("device %s: store unavailable: %s", device_id, exc)
        _POOL.discard(_store_path(device_id, context, settings))
        return DeviceStatus.NO_STORE
    if vector is None or vector.shape != (dim,):
        vector = initial_user_vector(seed, device_id, dim)
    return _Device(device_id, store, items, vector)


def _load_all(
    device_ids: Sequence[int],
    context: Context,
    settings: ClientSettings,
    seed: int,
    dim: int,
    training: bool = True,
) -> tuple[list[_Device], dict[int, DeviceStatus]]:
    ready: list[_Device] = []
    statuses: dict[int, DeviceStatus] = {}
    for device_id in device_ids:
        loaded = _load_device(device_id, context, settings, seed, dim, training)
        if isinstance(loaded, DeviceStatus):
            statuses[device_id] = loaded
        else:
            ready.append(loaded)
    return ready, statuses


def _train_cohort(
    devices: Sequence[_Device],
    global_arrays: list[np.ndarray],
    model_config: ModelConfig,
    item_features: np.ndarray | None,
    instructions: RoundInstructions,
) -> tuple[list[DeviceContribution], dict[int, DeviceStatus]]:
    """Train the cohort at once; when that fails, one by one to isolate the failures."""
    if not devices:
        return [], {}
    args = (global_arrays, model_config, item_features)
    try:
        contributions = run_device_rounds(
            *args,
            [d.items for d in devices],
            np.stack([d.user_vector for d in devices]),
            [d.device_id for d in devices],
            instructions,
        )
        return contributions, {}
    except FedpersError as exc:
        logger.warning("cohort training failed (%s); retrying device by device", exc)
    contributions = []
    failed: dict[int, DeviceStatus] = {}
    for d in devices:
        try:
            contributions.extend(
                run_device_rounds(
                    *args, [d.items], d.user_vector[None, :], [d.device_id], instructions
                )
            )
        except FedpersError as exc:
            logger.warning("device %s: local training failed: %s", d.device_id, exc)
            failed[d.device_id] = DeviceStatus.FAILED
    return contributions, failed


def _train_record_level(
    devices: Sequence[_Device],
    global_arrays: list[np.ndarray],
    model_config: ModelConfig,
    item_features: np.ndarray | None,
    instructions: RoundInstructions,
    settings: dict[str, Any],
    budget: float | None,
) -> tuple[list[DeviceContribution], dict[int, DeviceStatus], dict[int, float]]:
    """Record-level DP-SGD on each device, then the same privacy pipeline as the others.

    Per device: local training is :func:`~fedpers.client.training.dpsgd.dp_sgd_local_update`
    (its seed from ``training_seed``), then
    :func:`~fedpers.privacy.dp.pipeline.privatize_device_update` clips the whole update
    and adds the noise share, exactly as :func:`run_device_rounds` does after
    non-private training. The round is appended to the device's ledger (composed
    record-level epsilon); a device whose ledger already holds this round, or whose next
    round would exceed its budget, does not train.

    Returns:
        The contributions, the devices that did not train and why, and each trained
        device's composed record-level epsilon.
    """
    from fedpers.client.training.dpsgd import DPSGDConfig, dp_sgd_local_update, round_entry

    values = dict(settings)
    if budget is not None:
        values["epsilon_budget"] = budget
    config = DPSGDConfig(**values)
    seed, rnd = instructions.seed, instructions.server_round
    clip = instructions.clip_norm if instructions.private else NO_CLIP
    out: list[DeviceContribution] = []
    statuses: dict[int, DeviceStatus] = {}
    spent: dict[int, float] = {}
    for d in devices:
        ledger = d.store.ledger()
        if any(e.round == rnd for e in ledger):
            statuses[d.device_id] = DeviceStatus.ROUND_ALREADY_SPENT
            continue
        history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in ledger]
        try:
            update = dp_sgd_local_update(
                global_arrays,
                model_config,
                item_features,
                d.user_vector,
                d.items,
                config,
                training_seed(seed, rnd, d.device_id),
                history,
            )
            private = privatize_device_update(
                update.delta,
                clip,
                instructions.noise_share_std,
                device_rng(seed, rnd, d.device_id, "noise"),
                indicator_noise_share_std=instructions.indicator_noise_share_std,
            )
        except BudgetExhaustedError:
            statuses[d.device_id] = DeviceStatus.BUDGET_SPENT
            continue
        except FedpersError as exc:
            logger.warning("device %s: DP-SGD round failed: %s", d.device_id, exc)
            statuses[d.device_id] = DeviceStatus.FAILED
            continue
        entry = round_entry(config, int(d.items.size))
        total = record_level_epsilon([*history, entry], config.delta)
        d.store.append_ledger(
            LedgerEntry(
                round=rnd,
                epsilon=total,
                delta=config.delta,
                noise_multiplier=entry.noise_multiplier,
                sample_rate=entry.sample_rate,
                steps=entry.steps,
                accountant="rdp",
                created_at=time.time(),
            )
        )
        spent[d.device_id] = total
        out.append(
            DeviceContribution(
                device_id=d.device_id,
                arrays=private.arrays,
                norm=private.norm,
                clipped=private.clipped,
                n_examples=update.n_examples,
                loss=update.loss,
                user_vector=update.user_vector,
                indicator=private.indicator,
            )
        )
    return out, statuses, spent


def _persist(devices: Sequence[_Device], contributions: Sequence[DeviceContribution]) -> None:
    """Save each new private user vector in its own store (never sent)."""
    by_id = {d.device_id: d for d in devices}
    for c in contributions:
        device = by_id[int(c.device_id)]
        try:
            device.store.save_user_vector(c.user_vector)
        except ConsentError:
            # P10 without P5: the device trains but keeps no profile.
            logger.info("device %s: no P5 consent, user vector not kept", c.device_id)


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
    hosted, statuses = _hosted_devices(request.device_ids, context, settings)
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
    features = _item_features(settings.devices_dir) if model_config.n_item_features else None
    ready, refused = _load_all(inp.hosted, context, settings, instructions.seed, model_config.dim)
    statuses.update(refused)
    record_epsilon: dict[int, float] = {}
    if request.record_level is None:
        contributions, failed = _train_cohort(
            ready, inp.global_arrays, model_config, features, instructions
        )
    else:
        contributions, failed, record_epsilon = _train_record_level(
            ready,
            inp.global_arrays,
            model_config,
            features,
            instructions,
            dict(request.record_level),
            settings.record_epsilon_budget,
        )
    statuses.update(failed)
    _persist(ready, contributions)
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
    ready, refused = _load_all(
        inp.hosted, context, settings, instructions.seed, model_config.dim, training=False
    )
    statuses = {**inp.statuses, **refused}
    sums = dict.fromkeys(EVAL_KEYS, 0.0)
    count = 0
    if ready:
        holdout = _holdout(settings.devices_dir)
        ids = np.array([d.device_id for d in ready], dtype=np.int64)
        held = np.asarray(holdout[target][ids], dtype=np.int64)
        valid = np.asarray(holdout["valid"][ids], dtype=np.int64)
        exclude = [
            np.append(d.items, v) if target == "test" and v >= 0 else d.items
            for d, v in zip(ready, valid, strict=True)
        ]
        features = _item_features(settings.devices_dir) if model_config.n_item_features else None
        result = evaluate_devices(
            inp.global_arrays,
            model_config,
            features,
            [d.items for d in ready],
            np.stack([d.user_vector for d in ready]),
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


def make_client_app(
    settings: ClientSettings | None = None, *, mods: Sequence[Mod] = ()
) -> ClientApp:
    """A ClientApp with the fedpers handlers (``train``, ``evaluate``, ``query``).

    Args:
        settings: where the devices are; overridden per node by its node config.
        mods: Flower mods wrapping every handler (e.g. to capture egress in tests).

    Returns:
        The :class:`flwr.clientapp.ClientApp`.
    """
    base = settings or ClientSettings()
    client_app = ClientApp(mods=list(mods))

    @client_app.train()
    def _train(message: Message, context: Context) -> Message:
        _configure_process(base)
        return train_message(message, context, base)

    @client_app.evaluate()
    def _evaluate(message: Message, context: Context) -> Message:
        _configure_process(base)
        return evaluate_message(message, context, base)

    @client_app.query()
    def _query(message: Message, context: Context) -> Message:
        return hello_message(message, context, base)

    return client_app


def _configure_process(settings: ClientSettings) -> None:
    """One torch thread per process (2-core machines) and the store cache's bound."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    _POOL.capacity = settings.max_open_stores


app = make_client_app()
"""The ClientApp for the Deployment Engine (``flwr run``): settings from the node config."""
