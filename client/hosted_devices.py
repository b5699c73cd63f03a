"""The devices a node hosts: its settings, and each device's inputs read from its store.

**Node mode**: one device per node; the device is ``node_config["device-id"]`` or the
simulation's ``partition-id``, its store ``node_config["device-store"]`` or the one in
``devices-dir``. **Cohort mode**: the node hosts many virtual devices; each still has its
own store, private state, clipping and noise share, so the mathematics is the same.

Before a device trains or is evaluated, :func:`load_devices` checks its gates: it is
refused, sending nothing, when P10 is not granted, the Global Privacy Control signal is
set or (training only) its record-level budget is spent (:mod:`fedpers.privacy.consent`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context

from fedpers.client.device_round import NOISE_ENTROPIES, NoiseEntropy, initial_user_vector
from fedpers.client.devices_folder import DevicesFolder, HoldoutSplit
from fedpers.client.protocol import DeviceStatus
from fedpers.client.store import EventStore
from fedpers.client.store_pool import POOL
from fedpers.privacy.consent import may_train
from fedpers.privacy.errors import ConfigError, DataError, StoreError

__all__ = [
    "ClientSettings",
    "HostedDevice",
    "holdout_items",
    "hosted_devices",
    "item_features",
    "load_devices",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientSettings:
    """Where a node finds its devices and how it treats them.

    Attributes:
        devices_dir: the devices folder
            (:class:`~fedpers.client.devices_folder.DevicesFolder`): the device stores,
            the public ``catalogue.npz`` and, in simulation, ``holdout/``.
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
        noise_entropy: where the devices' noise shares come from: ``"seeded"`` (derived
            from the coordinator's seed: reproducible, for simulation) or ``"device"``
            (operating-system entropy that only the device knows; what ``fedpers deploy``
            gives its SuperNodes). See :func:`~fedpers.client.device_round.noise_generator`.
    """

    devices_dir: str = ""
    mode: str = "cohort"
    max_open_stores: int = 1024
    record_epsilon_budget: float | None = None
    provision: Callable[[int], None] | None = None
    secagg_context: str = ""
    noise_entropy: NoiseEntropy = "seeded"

    def __post_init__(self) -> None:
        if self.mode not in ("cohort", "node"):
            raise ConfigError(f"mode must be 'cohort' or 'node', got {self.mode!r}")
        if self.noise_entropy not in NOISE_ENTROPIES:
            raise ConfigError(
                f"noise-entropy must be one of {', '.join(NOISE_ENTROPIES)}, "
                f"got {self.noise_entropy!r}"
            )
        if self.max_open_stores < 1:
            raise ConfigError("max_open_stores must be >= 1")

    def resolve(self, node_config: Mapping[str, Any]) -> ClientSettings:
        """These settings overridden by a node's config.

        Keys: ``devices-dir``, ``mode``, ``record-epsilon-budget``, ``secagg-context``,
        ``noise-entropy``.
        """
        changes: dict[str, Any] = {}
        if "devices-dir" in node_config:
            changes["devices_dir"] = str(node_config["devices-dir"])
        if "mode" in node_config:
            changes["mode"] = str(node_config["mode"])
        if "record-epsilon-budget" in node_config:
            changes["record_epsilon_budget"] = float(node_config["record-epsilon-budget"])
        if "secagg-context" in node_config:
            changes["secagg_context"] = str(node_config["secagg-context"])
        if "noise-entropy" in node_config:
            changes["noise_entropy"] = str(node_config["noise-entropy"])
        return replace(self, **changes) if changes else self


@lru_cache(maxsize=4)
def item_features(devices_dir: str) -> np.ndarray | None:
    """The public item attributes of a devices folder's catalogue, if it has them."""
    path = DevicesFolder(Path(devices_dir)).catalogue
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return (
            np.asarray(data["item_features"], dtype=np.float32) if "item_features" in data else None
        )


@lru_cache(maxsize=4)
def holdout_items(devices_dir: str) -> dict[str, np.ndarray]:
    """Simulation only: each device's held-out items (``test``, ``valid``, ``negatives``).

    Raises:
        DataError: when the devices folder has no held-out items.
    """
    folder = DevicesFolder(Path(devices_dir))
    if not folder.holdout.is_dir():
        raise DataError(f"{folder.holdout}: no held-out items for evaluation")
    splits: tuple[HoldoutSplit, ...] = ("test", "valid", "negatives")
    return {
        name: np.load(folder.holdout_file(name), mmap_mode="r", allow_pickle=False)
        for name in splits
    }


@dataclass
class HostedDevice:
    """A device ready to train or evaluate (its inputs, read from its own store)."""

    device_id: int
    store: EventStore
    items: np.ndarray
    user_vector: np.ndarray


def hosted_devices(
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
    return DevicesFolder(Path(settings.devices_dir)).store(device_id)


def _open(device_id: int, context: Context, settings: ClientSettings) -> EventStore:
    path = _store_path(device_id, context, settings)
    if not path.exists() and settings.provision is not None:
        settings.provision(device_id)
    return POOL.get(path)


def _load_device(
    device_id: int,
    context: Context,
    settings: ClientSettings,
    seed: int,
    dim: int,
    training: bool = True,
) -> HostedDevice | DeviceStatus:
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
        POOL.discard(_store_path(device_id, context, settings))
        return DeviceStatus.NO_STORE
    if vector is None or vector.shape != (dim,):
        vector = initial_user_vector(seed, device_id, dim)
    return HostedDevice(device_id, store, items, vector)


def load_devices(
    device_ids: Sequence[int],
    context: Context,
    settings: ClientSettings,
    seed: int,
    dim: int,
    training: bool = True,
) -> tuple[list[HostedDevice], dict[int, DeviceStatus]]:
    """Load every requested device; the ready ones and why the others are not."""
    ready: list[HostedDevice] = []
    statuses: dict[int, DeviceStatus] = {}
    for device_id in device_ids:
        loaded = _load_device(device_id, context, settings, seed, dim, training)
        if isinstance(loaded, DeviceStatus):
            statuses[device_id] = loaded
        else:
            ready.append(loaded)
    return ready, statuses
