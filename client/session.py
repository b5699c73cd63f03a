"""The device's session vector: its most recent events as a shift of its ranking query.

A user's long-term taste lives in the private user vector ``u`` (fitted to the whole
history). What the user does *next* also depends on what they did *last*: on MovieLens
the held-out latest item is much closer to the last few items than to the history as a
whole (an item co-occurrence score over the last 5 items reaches ``hr10_sampled`` 0.62
on the test items where the same score over the whole history reaches 0.50). So when a
device ranks items it uses the query::

    q = u + weight * s,    s = sum_j w_j v_{h_j} / sum_j w_j,    w_j = decay ** age_j

over the last ``window`` items ``h`` of its history in time order (``age`` 0 for the
newest), with ``v`` the global item vectors. The items are then ranked by
``q . v_i + b_i``, one matrix-vector product like the plain ``u . v_i + b_i``.

Everything here runs on the device over data that stays there: the history and ``s``
never leave it, and nothing is learned or sent from them. ``weight = 0`` is the plain
ranking. The functions are pure: they read their inputs and return new arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpers.privacy.errors import ConfigError

__all__ = [
    "SessionConfig",
    "check_session",
    "session_query",
    "session_vector",
    "session_vectors",
]


def check_session(weight: float, decay: float, window: int) -> None:
    """Validate session parameters.

    Raises:
        ConfigError: ``weight < 0``, ``decay`` outside ``(0, 1]`` or ``window < 1``.
    """
    if not (np.isfinite(weight) and weight >= 0):
        raise ConfigError(f"session weight must be finite and >= 0, got {weight}")
    if not (np.isfinite(decay) and 0 < decay <= 1):
        raise ConfigError(f"session decay must be in (0, 1], got {decay}")
    if window < 1:
        raise ConfigError(f"session window must be >= 1, got {window}")


@dataclass(frozen=True)
class SessionConfig:
    """How a device blends its recent events into its ranking query.

    Attributes:
        weight: the shift ``u + weight * s`` (``0``: rank with ``u`` alone).
        decay: weight ratio between a history item and the next newer one, ``(0, 1]``.
        window: how many of the newest history items ``s`` averages.
    """

    weight: float = 0.0
    decay: float = 0.7
    window: int = 10

    def __post_init__(self) -> None:
        check_session(self.weight, self.decay, self.window)

    def to_meta(self) -> dict[str, float | int]:
        """JSON-ready form (stored in a published model's ``meta["session"]``)."""
        return {"weight": float(self.weight), "decay": float(self.decay), "window": self.window}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> SessionConfig:
        """Inverse of :meth:`to_meta`; ``None`` or an empty mapping gives the plain ranking.

        Raises:
            ConfigError: on invalid or non-numeric values.
        """
        if not meta:
            return cls()
        try:
            return cls(
                weight=float(meta.get("weight", 0.0)),
                decay=float(meta.get("decay", 0.7)),
                window=int(meta.get("window", 10)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad session settings {dict(meta)!r}: {exc}") from exc


def session_vector(
    item_vectors: np.ndarray, history: np.ndarray, decay: float, window: int
) -> np.ndarray:
    """The decay-weighted mean of the item vectors of the last ``window`` history items.

    Args:
        item_vectors: ``[items, dim]`` the global item vectors.
        history: the device's item indices in time order (oldest first).
        decay: weight ratio between an item and the next newer one, in ``(0, 1]``
            (``1``: a plain mean of the window).
        window: how many of the newest items count.

    Returns:
        ``float64[dim]``; zeros when the history is empty.

    Raises:
        ConfigError: on invalid ``decay`` or ``window``, or an index outside the catalogue.

    Example:
        >>> v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> session_vector(v, np.array([0, 1]), decay=0.5, window=5).round(3).tolist()
        [0.333, 0.667]
    """
    check_session(0.0, decay, window)
    recent = np.asarray(history, dtype=np.int64)[-window:]
    dim = int(item_vectors.shape[1])
    if recent.size == 0:
        return np.zeros(dim, dtype=np.float64)
    if recent.min() < 0 or recent.max() >= item_vectors.shape[0]:
        raise ConfigError("a history item falls outside the catalogue")
    weights = float(decay) ** np.arange(recent.size - 1, -1, -1, dtype=np.float64)
    out: np.ndarray = np.einsum(
        "j,jd->d", weights / weights.sum(), np.asarray(item_vectors[recent], dtype=np.float64)
    )
    return out


def session_vectors(
    item_vectors: np.ndarray, histories: Sequence[np.ndarray], decay: float, window: int
) -> np.ndarray:
    """:func:`session_vector` for several devices, stacked ``float64[m, dim]``."""
    dim = int(item_vectors.shape[1])
    if not histories:
        return np.zeros((0, dim), dtype=np.float64)
    return np.stack([session_vector(item_vectors, h, decay, window) for h in histories])


def session_query(
    user_vector: np.ndarray,
    item_vectors: np.ndarray,
    history: np.ndarray,
    session: SessionConfig,
) -> np.ndarray:
    """The ranking query ``u + weight * s`` of one device (``u`` itself when the weight is 0).

    Args:
        user_vector: ``[dim]`` the device's private user vector.
        item_vectors: ``[items, dim]`` the global item vectors.
        history: the device's item indices in time order (oldest first).
        session: the weight, decay and window.

    Returns:
        ``float32[dim]``, a new array.

    Raises:
        ConfigError: when a history item falls outside the catalogue.
    """
    query = np.array(user_vector, dtype=np.float32, copy=True)
    if session.weight > 0:
        shift = session_vector(item_vectors, history, session.decay, session.window)
        query += np.float32(session.weight) * shift.astype(np.float32)
    return query
