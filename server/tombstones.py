"""Tombstones of erased users, as the federation reads them (GDPR Art. 17).

``fedpers serve`` answers an erasure (``DELETE /v1/users/{user_id}``) by removing every
row about the user and writing a *tombstone* into its database (``RUN_DIR/api.db`` by
default): ``sha256("fedpers-tombstone" | user_id)``, nothing else. The federation of the
same run consults those tombstones before every round and excludes the erased devices
(:mod:`fedpers.server.tombstone_sampler`): they are recorded in ``run.db`` as refused
with the reason :data:`ERASED_REASON` and are never sent a training instruction again.

A device's API user id is its device id written in decimal (device 42 is user ``"42"``),
the same id :func:`device_user_id` gives. Tombstones of every tenant count: a device is
excluded as soon as any tenant of the service erased its user.

This module is light on purpose (``hashlib``, ``sqlite3``): the API imports
:func:`tombstone_of` from it, and the API imports no federation code.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from fedpers.privacy.errors import StoreError
from fedpers.server.run_dir import RunDirectory

__all__ = [
    "ERASED_REASON",
    "TombstoneReader",
    "device_user_id",
    "read_tombstones",
    "tombstone_of",
]

ERASED_REASON = "erased"
"""The ``participants.reason`` of a device excluded because its user was erased."""


def tombstone_of(user_id: str) -> str:
    """The tombstone of an erased id: ``sha256("fedpers-tombstone" | user_id)`` in hex."""
    return hashlib.sha256(f"fedpers-tombstone\x00{user_id}".encode()).hexdigest()


def device_user_id(device_id: int) -> str:
    """The API user id of a federation device: its id in decimal (``42`` -> ``"42"``)."""
    return str(int(device_id))


def read_tombstones(db_path: Path) -> frozenset[str]:
    """Every tombstone in the API database at ``db_path`` (all tenants).

    A missing database, or one without a ``tombstones`` table yet, holds none.

    Raises:
        StoreError: the file exists but cannot be read as the API database. The
            federation fails closed: it does not run a round it cannot check.
    """
    path = Path(db_path)
    if not path.exists():
        return frozenset()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        try:
            table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tombstones'"
            ).fetchone()
            if table is None:
                return frozenset()
            rows = conn.execute("SELECT tombstone FROM tombstones").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{path}: cannot read the API's tombstones ({exc}); no round runs until "
            "erased devices can be excluded"
        ) from exc
    return frozenset(str(r[0]) for r in rows)


class TombstoneReader:
    """Which devices of a cohort are erased, re-reading the API database on every call.

    Example:
        >>> reader = TombstoneReader(Path("/nonexistent/api.db"))
        >>> reader.erased([1, 2, 3])
        []
    """

    def __init__(self, db_path: Path) -> None:
        """Read tombstones from the API database at ``db_path`` (it may not exist yet)."""
        self.db_path = Path(db_path)

    @classmethod
    def for_run(cls, run_dir: Path) -> TombstoneReader:
        """The reader of ``RUN_DIR/api.db``, where ``fedpers serve --run RUN_DIR`` writes."""
        return cls(RunDirectory(run_dir).api_db)

    def erased(self, devices: Iterable[int]) -> list[int]:
        """The devices of ``devices`` whose user was erased, in the given order.

        Raises:
            StoreError: the API database exists but cannot be read.
        """
        stones = read_tombstones(self.db_path)
        if not stones:
            return []
        return [int(d) for d in devices if tombstone_of(device_user_id(int(d))) in stones]
