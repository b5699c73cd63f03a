"""The personal state: the private user vector and the optional personal head (one row)."""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.privacy.errors import DataError, StoreCorruptedError

__all__ = [
    "as_user_vector",
    "read_personal_head",
    "read_personal_state",
    "read_user_vector",
    "write_personal_head",
    "write_user_vector",
]


def as_user_vector(vec: Any) -> np.ndarray:
    """``vec`` as a float32 user vector.

    Raises:
        DataError: ``vec`` is not a finite, non-empty 1-D numeric array.
    """
    try:
        array = np.asarray(vec, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"user vector is not numeric: {exc}") from None
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"user vector must be 1-D and non-empty, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError("user vector holds NaN or infinity")
    return array


def read_user_vector(conn: sqlite3.Connection, path: Path) -> np.ndarray | None:
    """The user vector (float32), or ``None`` when none was saved.

    Raises:
        StoreCorruptedError: the stored vector does not have its recorded size.
    """
    row = conn.execute("SELECT dim, user_vector FROM personal_state WHERE id = 1").fetchone()
    if row is None or row[1] is None:
        return None
    dim, blob = row
    vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if vector.size != dim:
        raise StoreCorruptedError(
            f"{path}: the user vector has {vector.size} values, expected {dim}"
        )
    return vector


def write_user_vector(conn: sqlite3.Connection, array: np.ndarray) -> None:
    """Replace the user vector with ``array`` (from :func:`as_user_vector`)."""
    conn.execute(
        "INSERT INTO personal_state (id, dim, user_vector, updated_at) "
        "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET dim = excluded.dim, "
        "user_vector = excluded.user_vector, updated_at = excluded.updated_at",
        [int(array.size), array.astype("<f4").tobytes(), time.time()],
    )


def read_personal_head(conn: sqlite3.Connection) -> bytes | None:
    """The serialised personal head, or ``None`` when none was saved."""
    row = conn.execute("SELECT head FROM personal_state WHERE id = 1").fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def write_personal_head(conn: sqlite3.Connection, blob: bytes | bytearray | memoryview) -> None:
    """Replace the serialised personal head.

    Raises:
        DataError: ``blob`` is not bytes.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise DataError(f"the personal head is stored as bytes, got {type(blob).__name__}")
    conn.execute(
        "INSERT INTO personal_state (id, head, updated_at) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET head = excluded.head, "
        "updated_at = excluded.updated_at",
        [bytes(blob), time.time()],
    )


def read_personal_state(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The personal state as JSON-ready values (the owner's export), or ``None``."""
    row = conn.execute(
        "SELECT dim, user_vector, head, updated_at FROM personal_state WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    dim, vector, head, updated_at = row
    return {
        "dim": dim,
        "user_vector": None if vector is None else np.frombuffer(vector, dtype="<f4").tolist(),
        "personal_head_base64": (
            None if head is None else base64.b64encode(bytes(head)).decode("ascii")
        ),
        "updated_at": updated_at,
    }
