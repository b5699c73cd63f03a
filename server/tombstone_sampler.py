"""Exclude erased devices from every round: a sampler wrapper and the round's record.

:class:`ErasureAwareSampler` draws a cohort exactly as :class:`DeviceSampler` does (same
generator, same checkpointed state, so a resumed run draws the same cohorts), then
removes the devices whose user was erased (:mod:`fedpers.server.tombstones`) before any
instruction is addressed. An excluded device is treated as a refusal: it sends nothing,
the round's mean keeps its public denominator, and the devices left are protected as
before. :func:`with_exclusions` adds the excluded devices to the round's report, so
``run.db`` lists each one under ``participants`` as ``refused`` with reason ``erased``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fedpers.server.rundb import ParticipantRecord, RoundReport
from fedpers.server.sampling import DeviceSampler, SamplingConfig
from fedpers.server.tombstones import ERASED_REASON, TombstoneReader

__all__ = ["ErasureAwareSampler", "with_exclusions"]


class ErasureAwareSampler(DeviceSampler):
    """A :class:`DeviceSampler` whose cohorts never contain an erased device."""

    def __init__(self, config: SamplingConfig, seed: int, tombstones: TombstoneReader) -> None:
        """Sample like ``DeviceSampler(config, seed)``, then drop what ``tombstones`` erased."""
        super().__init__(config, seed)
        self.tombstones = tombstones
        self._excluded: list[int] = []

    @classmethod
    def for_run(cls, config: SamplingConfig, seed: int, run_dir: Path) -> ErasureAwareSampler:
        """The sampler of a run whose API database is ``RUN_DIR/api.db``."""
        return cls(config, seed, TombstoneReader.for_run(run_dir))

    def sample(self) -> np.ndarray:
        """Draw the next cohort and remove the erased devices (kept for :meth:`pop_excluded`).

        Raises:
            StoreError: the API database exists but cannot be read (fail closed).
        """
        cohort = super().sample()
        self._excluded = self.tombstones.erased(cohort.tolist())
        if not self._excluded:
            return cohort
        return cohort[~np.isin(cohort, np.asarray(self._excluded, dtype=np.int64))]

    def pop_excluded(self) -> list[int]:
        """The devices the last draw excluded (cleared by the call)."""
        excluded, self._excluded = self._excluded, []
        return excluded


def with_exclusions(report: RoundReport, excluded: list[int]) -> RoundReport:
    """``report`` with the ``excluded`` devices counted as sampled and refused (``erased``)."""
    if not excluded:
        return report
    records = [ParticipantRecord(int(d), "refused", ERASED_REASON) for d in excluded]
    record = dataclasses.replace(
        report.record,
        sampled=report.record.sampled + len(excluded),
        refused=report.record.refused + len(excluded),
    )
    return dataclasses.replace(report, record=record, participants=[*report.participants, *records])
