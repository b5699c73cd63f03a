"""What every report section uses: the verdict maker and summary statistics."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from fedpers.privacy.audit.report import (
    SummaryStats,
    Verdict,
    VerdictId,
    VerdictStatus,
)

__all__ = ["summary_stats", "verdict_of"]


def verdict_of(vid: VerdictId, title: str) -> Callable[[VerdictStatus, str], Verdict]:
    """The maker of one check's verdicts: ``verdict_of(id, title)(status, summary)``.

    Each ``*_verdict`` function names its check's id and title once and returns one of
    its outcomes.
    """

    def verdict(status: VerdictStatus, summary: str) -> Verdict:
        return Verdict(id=vid, title=title, status=status, summary=summary)

    return verdict


def summary_stats(values: Iterable[float]) -> SummaryStats:
    """Count, min, median, mean, 90th percentile and max of finite values."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return SummaryStats(count=0, min=None, median=None, mean=None, p90=None, max=None)
    return SummaryStats(
        count=int(arr.size),
        min=float(arr.min()),
        median=float(np.median(arr)),
        mean=float(arr.mean()),
        p90=float(np.percentile(arr, 90)),
        max=float(arr.max()),
    )
