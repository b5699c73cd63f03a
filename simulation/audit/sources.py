"""Read everything an audit needs from a run directory, without changing anything in it.

A run directory (see :mod:`fedpers.server.rundb`) holds ``config.json``, ``run.db``,
``metrics.jsonl``, ``checkpoint.npz`` and, in simulation, a devices folder (the
configuration's ``devices_dir``) with one SQLite store per device
(``device-0000042.db``), the public ``catalogue.npz`` and the held-out items
(``holdout/``). Every SQLite file is opened read-only (``mode=ro``), so auditing never
migrates, checkpoints or otherwise writes a file of the run.

Device stores are read with SQL against the store schema of
:mod:`fedpers.client.store.schema` (events with their catalogue index, the consent log,
the privacy ledger, the private user vector): the auditor is the one component allowed to
look inside them, and it only summarises what it reads.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from fedpers.privacy.errors import DataError, StoreError
from fedpers.server.checkpoint import load_checkpoint
from fedpers.server.rundb import RUN_DB_NAME, RunDB

__all__ = [
    "CONFIG_NAME",
    "DeviceRecord",
    "RunSources",
    "device_store_files",
    "finite_or_none",
    "open_readonly",
    "read_device",
    "read_devices",
    "read_run",
]

CONFIG_NAME = "config.json"
_DEVICE_FILE = re.compile(r"^device-(\d+)\.db$")


@contextmanager
def open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a SQLite file (``mode=ro``; ``immutable`` as a fallback).

    Raises:
        StoreError: when the file is missing or is not a readable SQLite database.
    """
    if not path.is_file():
        raise StoreError(f"{path}: no such SQLite file")
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        try:
            # a WAL file in a read-only folder: read the main file as it is
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open read-only ({exc})") from exc
    try:
        yield conn
    finally:
        conn.close()


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


def _table_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def _purposes(text: str) -> frozenset[int]:
    return frozenset(int(p) for p in json.loads(text))


def read_device(path: Path, device_id: int) -> DeviceRecord:
    """Read one device store read-only.

    A store whose events, consent, consent log, personal state and ledger are all empty is
    taken as erased (``EventStore.erase`` empties exactly those tables and vacuums), at the
    file's modification time, unless ``meta.erased_at`` records the time. A store that
    never received any consent looks the same; it may not take part either.

    Raises:
        StoreError: when the file cannot be read as a device store.
    """
    with open_readonly(path) as conn:
        tables = _table_names(conn)
        needed = {"events", "catalogue", "consent", "consent_log", "meta"}
        if not needed <= tables:
            raise StoreError(f"{path}: not a fedpers device store (tables {sorted(tables)})")
        try:
            items = np.fromiter(
                (
                    int(r[0])
                    for r in conn.execute(
                        "SELECT c.idx FROM events e JOIN catalogue c ON c.id = e.item_id "
                        "WHERE c.idx IS NOT NULL ORDER BY e.timestamp, e.id"
                    )
                ),
                dtype=np.int64,
            )
            log = [
                (float(at), _purposes(granted), bool(gpc))
                for at, granted, gpc in conn.execute(
                    "SELECT at, granted, gpc FROM consent_log ORDER BY id"
                )
            ]
            row = conn.execute("SELECT purposes, gpc FROM consent WHERE id = 1").fetchone()
            consent = None if row is None else (_purposes(row[0]), bool(row[1]))
            ledger_epsilon = None
            if "ledger" in tables:
                last = conn.execute(
                    "SELECT epsilon FROM ledger ORDER BY round DESC LIMIT 1"
                ).fetchone()
                ledger_epsilon = None if last is None else float(last[0])
            vector = None
            personal = 0
            if "personal_state" in tables:
                state = conn.execute(
                    "SELECT user_vector FROM personal_state WHERE id = 1"
                ).fetchone()
                personal = 0 if state is None else 1
                if state is not None and state[0] is not None:
                    vector = np.frombuffer(state[0], dtype="<f4").astype(np.float32)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"{path}: unreadable device store ({exc})") from exc
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


def device_store_files(devices_dir: Path) -> dict[int, Path]:
    """``{device id: store file}`` of every ``device-NNNNNNN.db`` in a devices folder."""
    out: dict[int, Path] = {}
    if not devices_dir.is_dir():
        return out
    for path in devices_dir.iterdir():
        match = _DEVICE_FILE.match(path.name)
        if match is not None and path.is_file():
            out[int(match.group(1))] = path
    return dict(sorted(out.items()))


def read_devices(devices_dir: Path) -> tuple[dict[int, DeviceRecord], dict[int, str]]:
    """Read every device store of a devices folder.

    Returns:
        ``(records, problems)``: the readable stores by device id, and for every store
        that could not be read, why.
    """
    records: dict[int, DeviceRecord] = {}
    problems: dict[int, str] = {}
    for device_id, path in device_store_files(devices_dir).items():
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
        with open_readonly(self.run_dir / RUN_DB_NAME) as conn:
            yield RunDB(self.run_dir, sqlite_utils.Database(conn))


def _devices_dir(run_dir: Path, config: dict[str, Any]) -> Path | None:
    raw = config.get("devices_dir")
    candidates = []
    if raw:
        given = Path(str(raw))
        candidates.append(given if given.is_absolute() else run_dir / given)
        candidates.append(given)
    candidates.append(run_dir / "devices")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def read_run(run_dir: str | Path, *, with_devices: bool = True) -> RunSources:
    """Read a run directory (read-only).

    Args:
        run_dir: the run directory.
        with_devices: also read every device store of the run's devices folder.

    Returns:
        The :class:`RunSources`.

    Raises:
        DataError: when the directory has no ``run.db`` or ``config.json`` is not JSON.
        StoreError: when the run database cannot be read.
    """
    root = Path(run_dir)
    if not (root / RUN_DB_NAME).is_file():
        raise DataError(f"{root}: not a run directory (no {RUN_DB_NAME})")
    config: dict[str, Any] = {}
    config_path = root / CONFIG_NAME
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{config_path}: not valid JSON ({exc})") from exc
    with open_readonly(root / RUN_DB_NAME) as conn:
        db = RunDB(root, sqlite_utils.Database(conn))
        try:
            stored = db.read_config()
            privacy = db.read_privacy()
            rounds = db.rounds()
            participants = db.participants()
            models = [
                {**row, "metrics": json.loads(row.get("metrics") or "{}")}
                for row in db.db.table("models").rows_where(order_by="round")
            ]
        except (sqlite3.Error, json.JSONDecodeError) as exc:
            raise StoreError(f"{root / RUN_DB_NAME}: unreadable run database ({exc})") from exc
    if not config:
        config = dict(stored)
    final_arrays: list[np.ndarray] | None = None
    final_round: int | None = None
    state: dict[str, Any] = {}
    if (root / "checkpoint.npz").is_file():
        checkpoint = load_checkpoint(root)
        final_arrays = [np.asarray(a) for a in checkpoint.arrays]
        final_round = int(checkpoint.round)
        state = dict(checkpoint.state)
    devices_dir = _devices_dir(root, config)
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
