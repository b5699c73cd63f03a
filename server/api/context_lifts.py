"""Contextual popularity learned from the tenant's own feedback (P11: no profile).

``POST /v1/feedback`` may carry the request context it answers (device type, hour,
locale). Besides the per-item counters it then increments aggregate counters per
``(tenant, "key=value", item)`` (table ``engine_context_counters``; no row names a user
or a request). A *contextual* answer (an unknown user, or one who granted P11 but not
profiling) adds to each item's public popularity, for every ``key=value`` of its context,
the item's **lift** in that context: how much better it does there than the context's
average, on a log scale and shrunk towards 0 while the item has few impressions::

    lift = log((clicks + m * p) / (impressions + m)) - log(p),   p = (C + 1) / (N + 2)

with ``C`` and ``N`` the context's clicks and impressions over all of the tenant's items
and ``m`` = :data:`PRIOR_IMPRESSIONS` pseudo-impressions at the context's rate; clipped
to ``[-MAX_LIFT, MAX_LIFT]``. An item never shown in a context has lift 0 there, so
without feedback the contextual ranking is the popularity ranking plus the run's public
per-context boosts (``context_popularity.npz``), as before.

:func:`context_lift` is the pure rule; :class:`ContextLifts` is the thin per-process
cache that reads a context's counters at most once per ``ttl_s`` seconds
(``FEDPERS_API_CONTEXT_TTL_S``), so a busy context costs one SQL read per TTL, not one per
request.

Example:
    >>> context_lift(np.array([0, 40]), np.array([0, 30]), 400, 60).round(2).tolist()
    [0.0, 1.29]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sqlite_utils

__all__ = [
    "MAX_CACHED",
    "MAX_LIFT",
    "PRIOR_IMPRESSIONS",
    "ContextLifts",
    "SparseBoost",
    "add_boosts",
    "context_keys",
    "context_lift",
]

#: Pseudo-impressions at the context's average rate that every item starts with.
PRIOR_IMPRESSIONS = 20.0
#: The largest lift (either sign) one ``key=value`` can add to an item's popularity.
MAX_LIFT = 2.0

#: At most this many (tenant, ``key=value``, model) entries are cached per process; the
#: oldest go first (a context's ``device`` is free text, so the keys are not bounded).
MAX_CACHED = 4096

#: ``(model indices, lifts)`` of the items with counters in one context.
SparseBoost = tuple[np.ndarray, np.ndarray]


def context_keys(context: Mapping[str, Any] | None) -> list[str]:
    """The ``"key=value"`` names of a request context, in the ranking's own format.

    Example:
        >>> context_keys({"device": "tv", "hour": 21})
        ['device=tv', 'hour=21']
    """
    return [f"{key}={value}" for key, value in (context or {}).items() if value is not None]


def context_lift(
    impressions: np.ndarray,
    clicks: np.ndarray,
    context_impressions: int,
    context_clicks: int,
    *,
    prior: float = PRIOR_IMPRESSIONS,
    max_lift: float = MAX_LIFT,
) -> np.ndarray:
    """Each item's log lift over its context's click rate (pure; see the module docstring).

    Args:
        impressions: ``[items]`` impressions of each item in the context.
        clicks: ``[items]`` clicks of each item in the context (clicks above the
            impressions count as impressions too).
        context_impressions: impressions of every item in the context.
        context_clicks: clicks of every item in the context.
        prior: pseudo-impressions at the context's rate (shrinkage towards 0).
        max_lift: the bound of ``|lift|``.

    Returns:
        ``float64[items]`` in ``[-max_lift, max_lift]``; 0 where an item has no
        impressions and no clicks.
    """
    shown = np.maximum(np.asarray(impressions, dtype=np.float64), clicks)
    clicked = np.asarray(clicks, dtype=np.float64)
    total_shown = max(float(context_impressions), float(context_clicks))
    base = (float(context_clicks) + 1.0) / (total_shown + 2.0)
    lift = np.log((clicked + prior * base) / (shown + prior)) - np.log(base)
    out: np.ndarray = np.clip(lift, -max_lift, max_lift)
    return out


def _read_context(
    db: sqlite_utils.Database, tenant: str, key: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = db.execute(
        "SELECT item, impressions, clicks FROM engine_context_counters "
        "WHERE tenant = ? AND context = ?",
        [tenant, key],
    ).fetchall()
    items = [str(r[0]) for r in rows]
    shown = np.asarray([int(r[1]) for r in rows], dtype=np.int64)
    clicked = np.asarray([int(r[2]) for r in rows], dtype=np.int64)
    return items, shown, clicked


class ContextLifts:
    """Per-process cache of the lifts of each (tenant, ``key=value``, served model).

    Thread-safe; an entry is re-read from the database once it is ``ttl_s`` old
    (``ttl_s = 0``: every request reads), and at most :data:`MAX_CACHED` are kept.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """Cache for ``ttl_s`` seconds, timed by ``clock``."""
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._entries: dict[tuple[str, str, str], tuple[float, SparseBoost]] = {}
        self._lock = threading.Lock()

    def boosts(
        self,
        db: sqlite_utils.Database,
        tenant: str,
        context: Mapping[str, Any] | None,
        index: Mapping[str, int],
        model_sha256: str,
    ) -> list[SparseBoost]:
        """The lifts of every ``key=value`` of ``context`` that has feedback.

        Args:
            db: the API database.
            tenant: whose feedback counts (never another tenant's).
            context: the request context.
            index: the served model's item id -> model index (items the model does not
                know are left out).
            model_sha256: the served model (indices differ between versions).
        """
        out: list[SparseBoost] = []
        now = self._clock()
        for key in context_keys(context):
            cache_key = (tenant, key, model_sha256)
            with self._lock:
                entry = self._entries.get(cache_key)
            if entry is None or now - entry[0] >= self.ttl_s:
                entry = (now, self._load(db, tenant, key, index))
                with self._lock:
                    self._entries.pop(cache_key, None)  # re-inserted as the newest
                    while len(self._entries) >= MAX_CACHED:
                        del self._entries[next(iter(self._entries))]
                    self._entries[cache_key] = entry
            if entry[1][0].size:
                out.append(entry[1])
        return out

    def _load(
        self, db: sqlite_utils.Database, tenant: str, key: str, index: Mapping[str, int]
    ) -> SparseBoost:
        items, shown, clicked = _read_context(db, tenant, key)
        lifts = context_lift(shown, clicked, int(shown.sum()), int(clicked.sum()))
        known = [j for j, item in enumerate(items) if item in index]
        positions = np.asarray([index[items[j]] for j in known], dtype=np.int64)
        return positions, lifts[np.asarray(known, dtype=np.int64)]


def add_boosts(scores: np.ndarray, boosts: Sequence[SparseBoost]) -> np.ndarray:
    """``scores`` with every sparse boost added (in place; returns ``scores``).

    The positions within one boost are distinct (one row per item and context).
    """
    for positions, lifts in boosts:
        scores[positions] += lifts
    return scores
