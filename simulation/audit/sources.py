"""Read everything an audit needs from a run directory, without changing anything in it.

A run directory (:class:`~fedpers.server.run_dir.RunDirectory`) holds ``config.json``,
``run.db``, ``metrics.jsonl``, ``checkpoint.npz`` and, in simulation, a devices folder
(:class:`~fedpers.client.devices_folder.DevicesFolder`, the configuration's
``devices_dir``) with one SQLite store per device (``device-0000042.db``), the public
``catalogue.npz`` and the held-out items (``holdout/``). Every SQLite file is opened
read-only (``mode=ro``), so auditing never migrates, checkpoints or otherwise writes a
file of the run.

Device stores are read through the store's own read-only API
(:class:`~fedpers.client.store.readonly.ReadOnlyStore`: events with their catalogue
index, the consent log, the privacy ledger, the private user vector): the auditor is the
one component allowed to look inside them, and it only summarises what it reads.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.store.readonly import ReadOnlyStore, connect_readonly
from fedpers.privacy.errors import StoreError
from fedpers.server.checkpoint import load_checkpoint
from fedpers.server.run_dir import RunDirectory
from fedpers.server.rundb import RunDB

__all__ = [
    "DeviceRecord",
    "RunSources",
    "finite_or_none",
    "read_device",
    "read_devices",
    "read_run",
]


@dataclass(frozen=True, eq=False)
class DeviceRecord:
    """What the auditor reads from one device store.

    Attributes:
        device_id: the device.
        path: the store file.
        items: catalogue indices of its events' items in time order (its training data).
        consent_log: ``(at, granted purposes, gpc)`` after every consent change, oldest first.
        consent: the current ``(granted purposes, gpc)``, ``None`` when never decided.
        ledger_epsilon: record-level epsilon of the last ledger entry, ``None`` without one.
        user_vector: the private user vector, ``None`` when none is stored.
        erased_at: when the store was erased (``meta.erased_at`` where the store records
            it, else the file's modification time), ``None`` when it was not.
        erasure_evidence: how ``erased_at`` was established.
    """

    device_id: int
    path: Path
    items: np.ndarray
    consent_log: list[tuple[float, frozenset[int], bool]]
    consent: tuple[frozenset[int], bool] | None
    ledger_epsilon: float | None
    user_vector: np.ndarray | None
    erased_at: float | None
    erasure_evidence: str


def read_device(path: Path, device_id: int) -> DeviceRecord:
    """Read one device store read-only.

    A store whose events, consent, consent log, personal state and ledger are all empty is
    taken as erased (``EventStore.erase`` empties exactly those tables and vacuums), at the
    file's modification time, unless ``meta.erased_at`` records the time. A store that
    never received any consent looks the same; it may not take part either.

    Raises:
        StoreError: when the file cannot be read as a device store.
    """
    with ReadOnlyStore.open(path) as store:
        items = store.history_indices()
        log = [(e.at, frozenset(int(p) for p in e.granted), e.gpc) for e in store.consent_log()]
        state = store.consent()
        consent = None if state is None else (frozenset(int(p) for p in state.granted), state.gpc)
        ledger_epsilon = store.epsilon_spent()
        vector = store.user_vector()
        personal = int(store.has_personal_state())
        meta = store.meta()
    erased_at: float | None = None
    evidence = "not erased"
    empty = items.size == 0 and not log and consent is None and personal == 0
    if "erased_at" in meta:
        erased_at, evidence = float(meta["erased_at"]), "meta.erased_at recorded by the store"
    elif empty and ledger_epsilon is None:
        erased_at = path.stat().st_mtime
        evidence = (
            "every personal table empty (erased, or never given any consent); erasure time "
            "taken from the file's modification time"
        )
    return DeviceRecord(
        device_id=device_id,
        path=path,
        items=items,
        consent_log=log,
        consent=consent,
        ledger_epsilon=ledger_epsilon,
        user_vector=vector,
        erased_at=erased_at,
        erasure_evidence=evidence,
    )


def read_devices(devices_dir: Path) -> tuple[dict[int, DeviceRecord], dict[int, str]]:
    """Read every device store of a devices folder.

    Returns:
        ``(records, problems)``: the readable stores by device id, and for every store
        that could not be read, why.
    """
    records: dict[int, DeviceRecord] = {}
    problems: dict[int, str] = {}
    for device_id, path in DevicesFolder(devices_dir).stores().items():
        try:
            records[device_id] = read_device(path, device_id)
        except StoreError as exc:
            problems[device_id] = str(exc)
    return records, problems


@dataclass(frozen=True, eq=False)
class RunSources:
    """Everything read from a run directory.

    Attributes:
        run_dir: the run directory.
        config: ``config.json`` (the federation configuration).
        stored_config: the run database's ``config`` table.
        privacy: the run database's ``privacy`` table.
        rounds: every recorded round, in order (``metrics`` decoded).
        participants: every participant row.
        models: the model registry rows, in round order.
        final_arrays: the global model of the checkpoint, ``None`` without one.
        final_round: the round of that checkpoint.
        checkpoint_state: the checkpoint's state tree (accountant, optimiser, ...).
        devices_dir: the devices folder, ``None`` when the run has none on this machine.
        devices: the readable device stores.
        device_problems: device stores that could not be read, and why.
    """

    run_dir: Path
    config: dict[str, Any]
    stored_config: dict[str, Any]
    privacy: dict[str, Any]
    rounds: list[dict[str, Any]]
    participants: list[dict[str, Any]]
    models: list[dict[str, Any]]
    final_arrays: list[np.ndarray] | None
    final_round: int | None
    checkpoint_state: dict[str, Any]
    devices_dir: Path | None
    devices: dict[int, DeviceRecord]
    device_problems: dict[int, str]

    @contextmanager
    def rundb(self) -> Iterator[RunDB]:
        """The run database opened read-only, for streaming reads (egress)."""
        with closing(connect_readonly(RunDirectory(self.run_dir).run_db)) as conn:
            yield RunDB(self.run_dir, sqlite_utils.Database(conn))


def read_run(run_dir: str | Path, *, with_devices: bool = True) -> RunSources:
    """Read a run directory (read-only).

    Args:
        run_dir: the run directory.
        with_devices: also read every device store of the run's devices folder.

    Returns:
        The :class:`RunSources`.

    Raises:
        StoreError: when the directory has no ``run.db``, or it cannot be read.
        DataError: when ``config.json`` is not a JSON object.
    """
    run = RunDirectory.open(run_dir)
    root = run.root
    config = run.read_config()
    with closing(connect_readonly(run.run_db)) as conn:
        db = RunDB(root, sqlite_utils.Database(conn))
        try:
            stored = db.read_config()
            privacy = db.read_privacy()
            rounds = db.rounds()
            participants = db.participants()
            models = db.models()
        except (sqlite3.Error, json.JSONDecodeError) as exc:
            raise StoreError(f"{run.run_db}: unreadable run database ({exc})") from exc
    if not config:
        config = dict(stored)
    final_arrays: list[np.ndarray] | None = None
    final_round: int | None = None
    state: dict[str, Any] = {}
    if run.checkpoint.is_file():
        checkpoint = load_checkpoint(root)
        final_arrays = [np.asarray(a) for a in checkpoint.arrays]
        final_round = int(checkpoint.round)
        state = dict(checkpoint.state)
    folder = run.find_devices(config.get("devices_dir"))
    devices_dir = None if folder is None else folder.root
    devices: dict[int, DeviceRecord] = {}
    problems: dict[int, str] = {}
    if with_devices and devices_dir is not None:
        devices, problems = read_devices(devices_dir)
    return RunSources(
        run_dir=root,
        config=config,
        stored_config=stored,
        privacy=privacy,
        rounds=rounds,
        participants=participants,
        models=models,
        final_arrays=final_arrays,
        final_round=final_round,
        checkpoint_state=state,
        devices_dir=devices_dir,
        devices=devices,
        device_problems=problems,
    )


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite number, else ``None``."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
