"""Enrol a simulated population: one on-device EventStore per user of a dataset.

:func:`prepare_devices` writes, under ``RUN_DIR/devices/`` (the names are
:class:`~fedpers.client.devices_folder.DevicesFolder`'s):

* ``catalogue.npz``: the public catalogue (item ids, attributes, their names and titles),
  which every device and the coordinator may read;
* ``holdout/{test,valid,negatives}.npy``: each device's held-out items of the
  leave-one-out protocol (:mod:`fedpers.simulation.evaluation.protocol`); a device reads only
  its own row, to evaluate the global model locally;
* ``seed.npz``: each device's interactions before its held-out target item (CSR; the
  training interactions and, for the test target, the validation item) and its
  simulated consent,
  from which a device's store is created;
* ``device-NNNNNNN.db``: the stores, one per device
  (:meth:`~fedpers.client.devices_folder.DevicesFolder.store`), created with batched appends: each
  gets the catalogue, its consent (P1, P5, P6 and P10 by default; a chosen fraction of
  devices withholds P10 or sets GPC) and its training events in time order.

Stores are created up front by a small process pool, or *lazily* (``lazy=True``) by the
node that first samples a device (:func:`provision_device`), which is how a population
of 100,000 devices with sampled cohorts stays cheap: a device enrols when it first
takes part.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedpers.client.consent import ConsentManager
from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.store import Event, EventStore, EventType
from fedpers.privacy.consent import Purpose
from fedpers.privacy.errors import ConfigError, StoreError
from fedpers.server.run_dir import RunDirectory
from fedpers.simulation.data.interactions import InteractionData
from fedpers.simulation.evaluation.protocol import LeaveOneOutSplit, Target

__all__ = [
    "DEFAULT_PURPOSES",
    "DevicePopulation",
    "create_device_store",
    "population_is_lazy",
    "prepare_devices",
    "provision_device",
]

logger = logging.getLogger(__name__)

DEFAULT_PURPOSES = (
    Purpose.STORE_ACCESS,
    Purpose.CREATE_PROFILES,
    Purpose.USE_PROFILES,
    Purpose.DEVELOP_SERVICES,
)
"""Purposes a simulated device grants by default (P1, P5, P6, P10)."""


@dataclass(frozen=True)
class DevicePopulation:
    """Where a simulated population lives and what it looks like.

    Attributes:
        devices_dir: the devices folder.
        num_devices: number of devices (one per user).
        n_items: catalogue size.
        n_item_features: width of the public item attributes (0: none).
        no_p10: devices that withhold P10 (they refuse to train).
        gpc: devices that set the Global Privacy Control signal.
        created: number of stores created up front (0 when lazy).
    """

    devices_dir: Path
    num_devices: int
    n_items: int
    n_item_features: int
    no_p10: tuple[int, ...]
    gpc: tuple[int, ...]
    created: int


def _history_rows(
    data: InteractionData, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rating and timestamp of each ``(user, item)`` pair (its first interaction)."""
    keys = data.users.astype(np.int64) * data.n_items + data.items.astype(np.int64)
    uniq, first = np.unique(keys, return_index=True)
    pos = np.searchsorted(uniq, users.astype(np.int64) * data.n_items + items)
    rows = first[pos]
    ratings: np.ndarray = np.asarray(data.ratings, dtype=np.float32)[rows]
    stamps: np.ndarray = np.asarray(data.timestamps, dtype=np.float64)[rows]
    return ratings, stamps


def _choose(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"device fractions must be in [0, 1], got {fraction}")
    k = round(fraction * n)
    return np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, np.int64)


def prepare_devices(
    run_dir: Path,
    data: InteractionData,
    split: LeaveOneOutSplit,
    *,
    seed: int = 0,
    no_p10_fraction: float = 0.0,
    gpc_fraction: float = 0.0,
    lazy: bool = False,
    workers: int = 2,
    target: Target = "test",
) -> DevicePopulation:
    """Write the population's public and seed files and create its stores.

    Args:
        run_dir: the run directory (``devices/`` is created inside).
        data: the dataset (catalogue ids, item attributes, ratings).
        split: its leave-one-out split (training interactions, held-out items).
        seed: picks which devices withhold P10 or set GPC.
        no_p10_fraction: fraction of devices that do not grant P10.
        gpc_fraction: fraction of devices that set GPC.
        lazy: create stores on first use instead of now.
        workers: processes creating stores up front.
        target: the held-out item the run is evaluated on; each device holds its
            history before it (:meth:`LeaveOneOutSplit.history`: the training
            interactions, plus the validation item when the target is ``"test"``).

    Returns:
        The :class:`DevicePopulation`.

    Raises:
        StoreError: when ``devices/`` already holds stores.
        ConfigError: on an out-of-range fraction.
    """
    folder = RunDirectory(Path(run_dir)).devices
    devices_dir = folder.root
    devices_dir.mkdir(parents=True, exist_ok=True)
    if folder.stores():
        raise StoreError(f"{devices_dir}: already holds device stores")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD1]))
    n = split.n_users
    no_p10 = _choose(n, no_p10_fraction, rng)
    gpc = _choose(n, gpc_fraction, rng)
    catalogue: dict[str, np.ndarray] = {"item_ids": np.asarray(data.item_ids, dtype=str)}
    if data.item_features is not None:
        catalogue["item_features"] = np.asarray(data.item_features, dtype=np.float32)
        catalogue["item_feature_names"] = np.asarray(data.item_feature_names, dtype=str)
    if data.item_titles is not None:  # public display titles, for the serving API
        catalogue["item_titles"] = np.asarray(data.item_titles, dtype=str)
    np.savez(folder.catalogue, **catalogue)  # type: ignore[arg-type]
    folder.holdout.mkdir(exist_ok=True)
    np.save(folder.holdout_file("test"), np.asarray(split.test_items, dtype=np.int64))
    np.save(folder.holdout_file("valid"), np.asarray(split.valid_items, dtype=np.int64))
    np.save(folder.holdout_file("negatives"), np.asarray(split.sampled_negatives, dtype=np.int64))
    no_p10_mask = np.zeros(n, dtype=bool)
    no_p10_mask[no_p10] = True
    gpc_mask = np.zeros(n, dtype=bool)
    gpc_mask[gpc] = True
    indptr, items = split.history(target)
    users = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    ratings, stamps = _history_rows(data, users, items)
    np.savez(
        folder.seed,
        indptr=np.asarray(indptr, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        timestamps=stamps,
        ratings=ratings,
        no_p10=no_p10_mask,
        gpc=gpc_mask,
    )
    folder.population.write_text(
        json.dumps(
            {
                "num_devices": n,
                "lazy": lazy,
                "target": target,
                "no_p10": len(no_p10),
                "gpc": len(gpc),
            }
        )
    )
    created = 0
    if not lazy:
        created = _create_all(devices_dir, n, workers)
    feats = 0 if data.item_features is None else int(data.item_features.shape[1])
    return DevicePopulation(
        devices_dir, n, split.n_items, feats, tuple(no_p10.tolist()), tuple(gpc.tolist()), created
    )


def _create_range(args: tuple[str, int, int]) -> int:
    devices_dir, lo, hi = args
    for device in range(lo, hi):
        create_device_store(Path(devices_dir), device)
    return hi - lo


def _create_all(devices_dir: Path, n: int, workers: int) -> int:
    chunk = max(1, -(-n // max(1, workers * 4)))
    jobs = [(str(devices_dir), lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    if workers <= 1 or n < 200:
        return sum(_create_range(j) for j in jobs)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_single_thread) as pool:
        return sum(pool.map(_create_range, jobs))


def _single_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


@lru_cache(maxsize=2)
def _seed(devices_dir: str) -> dict[str, np.ndarray]:
    folder = DevicesFolder(Path(devices_dir))
    with np.load(folder.seed, allow_pickle=False) as data:
        seed = {k: np.asarray(data[k]) for k in data.files}
    with np.load(folder.catalogue, allow_pickle=False) as data:
        seed["item_ids"] = np.asarray(data["item_ids"])
    return seed


def create_device_store(devices_dir: Path, device: int) -> Path:
    """Create one device's store from the population's seed file.

    Raises:
        StoreError: when the store already exists.
    """
    seed = _seed(str(devices_dir))
    item_ids: Sequence[str] = seed["item_ids"].tolist()
    path = DevicesFolder(devices_dir).store(device)
    lo, hi = int(seed["indptr"][device]), int(seed["indptr"][device + 1])
    events = [
        Event(item_ids[int(i)], EventType.RATING, float(r), float(t))
        for i, r, t in zip(
            seed["items"][lo:hi], seed["ratings"][lo:hi], seed["timestamps"][lo:hi], strict=True
        )
    ]
    if path.exists():
        raise StoreError(f"{path}: already exists")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    store = EventStore.create(tmp, item_ids)
    try:
        consent = ConsentManager(store)
        withheld = Purpose.DEVELOP_SERVICES if seed["no_p10"][device] else None
        purposes = [p for p in DEFAULT_PURPOSES if p is not withheld]
        consent.grant(*purposes)
        if seed["gpc"][device]:
            consent.set_gpc(True)
        if events:
            store.append_many(events)
    finally:
        store.close()
    os.replace(tmp, path)
    return path


def population_is_lazy(devices_dir: str | Path) -> bool:
    """Whether the population's stores are created on first use."""
    path = DevicesFolder(Path(devices_dir)).population
    return bool(path.is_file() and json.loads(path.read_text()).get("lazy"))


def provision_device(devices_dir: str, device: int) -> None:
    """Create ``device``'s store if it does not exist yet (lazy enrolment on first use)."""
    path = DevicesFolder(Path(devices_dir)).store(device)
    if path.exists():
        return
    try:
        create_device_store(Path(devices_dir), device)
    except StoreError:
        if not path.exists():
            raise
