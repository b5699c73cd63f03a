"""A/B experiments and the aggregate feedback counters that close the loop.

- Assignment is deterministic hash bucketing: ``sha256(tenant, experiment, user)`` maps a
  user to a point in ``[0, 1)`` and the variants' weights cut that interval
  (:func:`assign_variant`); nothing is stored per user, the same user always lands in the
  same variant, and another tenant's or experiment's buckets are independent.
- Feedback (``impression``, ``click``, ``conversion``) only increments sums: per
  (tenant, item) and per (tenant, experiment, variant). No row names a user or a request.
- Rates carry Wilson score intervals (:func:`wilson_interval`), which stay inside
  ``[0, 1]`` and behave at zero and small counts.
- Feedback that names its request context also increments sums per (tenant,
  ``key=value`` of the context, item): the contextual ranking's learned lifts
  (:mod:`fedpers.server.api.context_lifts`).

Tables (the ``fedpers.api.engine`` migration set, applied by ``open_api_db``):
``engine_experiments``, ``engine_item_counters``, ``engine_variant_counters``,
``engine_context_counters``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Literal

import sqlite_utils
from sqlite_utils.migrations import Migrations

from fedpers.privacy.errors import ConfigError, DataError
from fedpers.server.api.context_lifts import context_keys

__all__ = [
    "FEEDBACK_KINDS",
    "Experiment",
    "FeedbackKind",
    "Variant",
    "assign_variant",
    "bucket",
    "create_experiment",
    "experiment_report",
    "item_counters",
    "load_experiment",
    "migrations",
    "rate",
    "record_feedback",
    "wilson_interval",
]

FeedbackKind = Literal["impression", "click", "conversion"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("impression", "click", "conversion")
_COLUMN = {"impression": "impressions", "click": "clicks", "conversion": "conversions"}
Z95 = 1.959963984540054

migrations = Migrations("fedpers.api.engine")


@migrations()
def m001_engine_tables(db: sqlite_utils.Database) -> None:
    """Experiments and aggregate counters (no user column anywhere)."""
    db.table("engine_experiments").create(
        {"tenant": str, "id": str, "variants": str, "created_at": float},
        pk=("tenant", "id"),
    )
    db.table("engine_item_counters").create(
        {"tenant": str, "item": str, "impressions": int, "clicks": int, "conversions": int},
        pk=("tenant", "item"),
        defaults={"impressions": 0, "clicks": 0, "conversions": 0},
    )
    db.table("engine_variant_counters").create(
        {
            "tenant": str,
            "experiment": str,
            "variant": str,
            "impressions": int,
            "clicks": int,
            "conversions": int,
        },
        pk=("tenant", "experiment", "variant"),
        defaults={"impressions": 0, "clicks": 0, "conversions": 0},
    )


@migrations()
def m002_context_counters(db: sqlite_utils.Database) -> None:
    """Aggregate feedback per (tenant, context ``key=value``, item); no user column."""
    db.table("engine_context_counters").create(
        {
            "tenant": str,
            "context": str,
            "item": str,
            "impressions": int,
            "clicks": int,
            "conversions": int,
        },
        pk=("tenant", "context", "item"),
        defaults={"impressions": 0, "clicks": 0, "conversions": 0},
    )


# -- pure maths --------------------------------------------------------------------------


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default).

    ``(0.0, 1.0)`` when there are no trials; ``successes`` is clamped to ``[0, trials]``.

    Example:
        >>> [round(x, 4) for x in wilson_interval(5, 10)]
        [0.2366, 0.7634]
    """
    if trials <= 0:
        return (0.0, 1.0)
    s = min(max(successes, 0), trials)
    p = s / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(successes: int, trials: int) -> dict[str, Any]:
    """``{"value": successes / trials or None, "ci95": [lo, hi]}``."""
    lo, hi = wilson_interval(successes, trials)
    value = None if trials <= 0 else min(max(successes, 0), trials) / trials
    return {"value": value, "ci95": [lo, hi]}


def bucket(tenant: str, experiment: str, user_id: str) -> float:
    """The user's deterministic point in ``[0, 1)`` for one tenant's experiment."""
    key = "\x1f".join((tenant, experiment, user_id)).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment.

    Attributes:
        name: the variant's name.
        weight: its share of users (relative to the other variants' weights).
        exploration: the exploration share it serves with (``None``: the request's).
        diversity: the MMR diversity it serves with (``None``: the request's).
    """

    name: str
    weight: float = 1.0
    exploration: float | None = None
    diversity: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class Experiment:
    """An experiment of one tenant.

    Raises:
        ConfigError: no variants, duplicate names, a weight that is not positive and
            finite, or an exploration/diversity outside [0, 1].
    """

    tenant: str
    id: str
    variants: tuple[Variant, ...]
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.variants:
            raise ConfigError("an experiment needs at least one variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"variant names must be unique, got {names}")
        for v in self.variants:
            if not (math.isfinite(v.weight) and v.weight > 0):
                raise ConfigError(f"variant {v.name!r}: weight must be > 0, got {v.weight}")
            for label, value in (("exploration", v.exploration), ("diversity", v.diversity)):
                if value is not None and not 0.0 <= value <= 1.0:
                    raise ConfigError(f"variant {v.name!r}: {label} must be in [0, 1]")

    def variant(self, name: str) -> Variant:
        """The variant called ``name``.

        Raises:
            DataError: no such variant.
        """
        for v in self.variants:
            if v.name == name:
                return v
        names = ", ".join(v.name for v in self.variants)
        raise DataError(f"experiment {self.id!r} has no variant {name!r} (it has: {names})")


def assign_variant(experiment: Experiment, user_id: str) -> Variant:
    """The variant ``user_id`` is in: the weights cut ``[0, 1)`` in variant order."""
    point = bucket(experiment.tenant, experiment.id, user_id)
    total = sum(v.weight for v in experiment.variants)
    edge = 0.0
    for v in experiment.variants:
        edge += v.weight / total
        if point < edge:
            return v
    return experiment.variants[-1]


# -- storage ----------------------------------------------------------------------------


def _write(db: sqlite_utils.Database) -> AbstractContextManager[sqlite_utils.Database]:
    # Imported here: db.py imports this module for its migration set.
    from fedpers.server.api.db import write_transaction

    return write_transaction(db)


def create_experiment(db: sqlite_utils.Database, experiment: Experiment) -> Experiment:
    """Store a new experiment.

    Raises:
        DataError: the tenant already has an experiment with this id.
    """
    stamped = Experiment(experiment.tenant, experiment.id, experiment.variants, time.time())
    payload = json.dumps([v.to_dict() for v in stamped.variants])
    with _write(db):
        exists = db.execute(
            "SELECT 1 FROM engine_experiments WHERE tenant = ? AND id = ?",
            [stamped.tenant, stamped.id],
        ).fetchone()
        if exists:
            raise DataError(f"experiment {stamped.id!r} already exists")
        db.execute(
            "INSERT INTO engine_experiments (tenant, id, variants, created_at) VALUES (?, ?, ?, ?)",
            [stamped.tenant, stamped.id, payload, stamped.created_at],
        )
    return stamped


def load_experiment(
    db: sqlite_utils.Database, tenant: str, experiment_id: str
) -> Experiment | None:
    """The tenant's experiment ``experiment_id``, or ``None``."""
    row = db.execute(
        "SELECT variants, created_at FROM engine_experiments WHERE tenant = ? AND id = ?",
        [tenant, experiment_id],
    ).fetchone()
    if row is None:
        return None
    variants = tuple(Variant(**v) for v in json.loads(row[0]))
    return Experiment(tenant, experiment_id, variants, float(row[1]))


def record_feedback(
    db: sqlite_utils.Database,
    tenant: str,
    item: str,
    kind: FeedbackKind,
    *,
    experiment: str | None = None,
    variant: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Add one event to the item's, the variant's and the context's counters, atomically.

    Args:
        db: the API database.
        tenant: whose counters.
        item: the item id.
        kind: impression, click or conversion.
        experiment: with ``variant``, the experiment arm to count too.
        variant: the arm.
        context: the request context the item was shown in; each of its ``key=value``
            gets the event too (:func:`~fedpers.server.api.context_lifts.context_keys`).
    """
    column = _COLUMN[kind]
    with _write(db):
        for name in context_keys(context):
            db.execute(
                f"INSERT INTO engine_context_counters (tenant, context, item, {column}) "
                f"VALUES (?, ?, ?, 1) ON CONFLICT (tenant, context, item) "
                f"DO UPDATE SET {column} = {column} + 1",
                [tenant, name, item],
            )
        db.execute(
            f"INSERT INTO engine_item_counters (tenant, item, {column}) VALUES (?, ?, 1) "
            f"ON CONFLICT (tenant, item) DO UPDATE SET {column} = {column} + 1",
            [tenant, item],
        )
        if experiment is not None and variant is not None:
            db.execute(
                "INSERT INTO engine_variant_counters (tenant, experiment, variant, "
                f"{column}) VALUES (?, ?, ?, 1) ON CONFLICT (tenant, experiment, variant) "
                f"DO UPDATE SET {column} = {column} + 1",
                [tenant, experiment, variant],
            )


def item_counters(
    db: sqlite_utils.Database, tenant: str, items: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """``{item: (impressions, clicks)}`` of those ``items`` that have counters."""
    if not items:
        return {}
    rows = db.execute(
        "SELECT item, impressions, clicks FROM engine_item_counters WHERE tenant = ? "
        "AND item IN (SELECT value FROM json_each(?))",
        [tenant, json.dumps(list(items))],
    ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def experiment_report(db: sqlite_utils.Database, experiment: Experiment) -> dict[str, Any]:
    """Per variant: counts, CTR and conversion rate (per impression) with Wilson 95 % CIs."""
    rows = db.execute(
        "SELECT variant, impressions, clicks, conversions FROM engine_variant_counters "
        "WHERE tenant = ? AND experiment = ?",
        [experiment.tenant, experiment.id],
    ).fetchall()
    counts: Mapping[str, tuple[int, int, int]] = {
        str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows
    }
    variants = []
    for v in experiment.variants:
        shown, clicked, converted = counts.get(v.name, (0, 0, 0))
        variants.append(
            {
                **v.to_dict(),
                "impressions": shown,
                "clicks": clicked,
                "conversions": converted,
                "ctr": rate(clicked, shown),
                "conversion_rate": rate(converted, shown),
            }
        )
    return {"id": experiment.id, "created_at": experiment.created_at, "variants": variants}
