"""Section 5, consent: consenting vs participating devices per round, and erasures.

Each device's consent log is replayed at the start of, and during, every round.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from fedpers.privacy.audit.report import (
    ConsentRound,
    ConsentSection,
    ErasureRecord,
    Verdict,
)
from fedpers.privacy.consent import ConsentState, Purpose, may_train
from fedpers.simulation.audit.sections.common import verdict_of
from fedpers.simulation.audit.sources import DeviceRecord, RunSources

__all__ = ["consent_section", "consent_verdict", "erasure_verdict"]


def _state_at(log: Sequence[tuple[float, frozenset[int], bool]], at: float) -> ConsentState:
    granted: frozenset[int] = frozenset()
    gpc = False
    for when, purposes, flag in log:
        if when > at:
            break
        granted, gpc = purposes, flag
    return ConsentState(frozenset(Purpose(p) for p in granted), gpc, at)


def _may_train_during(device: DeviceRecord, start: float, end: float) -> bool:
    """Whether the device's consent allowed training at some moment of the round."""
    if may_train(_state_at(device.consent_log, start)):
        return True
    return any(
        may_train(_state_at(device.consent_log, when))
        for when, _, _ in device.consent_log
        if start < when <= end
    )


def consent_section(src: RunSources) -> ConsentSection:
    """Section 5: consenting vs participating devices per round, and erasures."""
    devices = src.devices
    accepted: dict[int, list[int]] = defaultdict(list)
    for row in src.participants:
        if row.get("status") == "accepted":
            accepted[int(row["round"])].append(int(row["device_id"]))
    erased_at = {d: at for d, rec in devices.items() if (at := rec.erased_at) is not None}
    rounds: list[ConsentRound] = []
    violations = 0
    unverifiable = 0
    for r in src.rounds:
        rnd = int(r["round"])
        start = float(r.get("started_at") or 0.0)
        end = start + float(r.get("wall_seconds") or 0.0)
        participants = accepted.get(rnd, [])
        consenting: int | None = None
        without = 0
        if devices:
            consenting = sum(
                1
                for d in devices.values()
                if d.erased_at is None and _may_train_during(d, start, end)
            )
            for device_id in participants:
                rec = devices.get(device_id)
                if rec is None or (rec.erased_at is not None and rec.erased_at >= start):
                    unverifiable += 1  # no store, or erased since: its consent log is gone
                    continue
                if rec.erased_at is not None or not _may_train_during(rec, start, end):
                    without += 1
        violations += without
        rounds.append(
            ConsentRound(
                round=rnd,
                consenting=consenting,
                participating=len(participants),
                participants_without_consent=without,
            )
        )
    erasures: list[ErasureRecord] = []
    for device_id, at in sorted(erased_at.items()):
        before = [int(r["round"]) for r in src.rounds if float(r.get("started_at") or 0) <= at]
        after = [
            int(r["round"])
            for r in src.rounds
            if float(r.get("started_at") or 0) > at
            and device_id in accepted.get(int(r["round"]), [])
        ]
        erasures.append(
            ErasureRecord(
                device_id=device_id,
                erased_after_round=max(before) if before else None,
                rounds_after_erasure=after,
            )
        )
    if devices:
        source = (
            f"consent logs of {len(devices)} device stores in {src.devices_dir}, replayed at "
            "each round's start and during the round"
        )
        if unverifiable:
            source += (
                f"; {unverifiable} participation(s) of devices erased since (or without a "
                "store) cannot be checked, because erasure removes the consent log"
            )
        if erased_at:
            methods = sorted({devices[d].erasure_evidence for d in erased_at})
            source += "; erasures: " + "; ".join(methods)
    else:
        source = (
            "no device stores available: consenting counts unknown; only the coordinator's "
            "refusal records were checked"
        )
    return ConsentSection(
        source=source,
        rounds=rounds,
        non_consenting_participations=violations,
        erasures=erasures,
    )


def consent_verdict(c: ConsentSection) -> Verdict:
    """Whether no device took part without P10 (and P1, without GPC) at that time."""
    verdict = verdict_of("consent_respected", "Only consenting devices took part")
    if all(r["consenting"] is None for r in c["rounds"]):
        return verdict(
            "not_applicable",
            "The device stores are not available here, so consent could not be replayed.",
        )
    n = c["non_consenting_participations"]
    if n:
        bad = next(r for r in c["rounds"] if r["participants_without_consent"])
        return verdict(
            "fail",
            f"{n} update(s) were aggregated from devices without P10 consent, first in round "
            f"{bad['round']}.",
        )
    total = sum(r["participating"] for r in c["rounds"])
    return verdict(
        "pass",
        f"All {total} aggregated updates came from devices that had granted P10 (develop and "
        "improve services) and P1, without a GPC signal, when the round ran.",
    )


def erasure_verdict(c: ConsentSection) -> Verdict:
    """Whether erased devices never took part after their erasure."""
    verdict = verdict_of("erasures_honoured", "Erasures honoured")
    if not c["erasures"]:
        return verdict("not_applicable", "No device store was erased.")
    late = [e for e in c["erasures"] if e["rounds_after_erasure"]]
    if late:
        e = late[0]
        return verdict(
            "fail",
            f"{len(late)} erased device(s) took part after erasure, e.g. device "
            f"{e['device_id']} in round(s) {e['rounds_after_erasure']}.",
        )
    return verdict(
        "pass",
        f"{len(c['erasures'])} erased device(s) took part in no round after their erasure.",
    )
