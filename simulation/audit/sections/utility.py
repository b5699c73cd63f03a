"""Section 8, utility: the ranking metrics after every round that reported any."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedpers.client.protocol import EVAL_KEYS
from fedpers.privacy.audit.report import (
    UtilityPoint,
)
from fedpers.simulation.audit.sources import finite_or_none

__all__ = ["utility_points"]


def utility_points(rounds: Sequence[Mapping[str, Any]]) -> list[UtilityPoint]:
    """Metrics after every round that reported any."""
    out: list[UtilityPoint] = []
    for r in rounds:
        metrics = r.get("metrics") or {}
        values = {k: finite_or_none(metrics.get(k)) for k in EVAL_KEYS}
        if any(v is not None for v in values.values()):
            out.append(
                UtilityPoint(
                    round=int(r["round"]),
                    hr10_sampled=values["hr10_sampled"],
                    ndcg10_sampled=values["ndcg10_sampled"],
                    hr10_full=values["hr10_full"],
                    ndcg10_full=values["ndcg10_full"],
                )
            )
    return out
