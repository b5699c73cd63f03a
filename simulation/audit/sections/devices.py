"""Section 2, the devices: participation, drop reasons, record-level ledgers, refusals."""

from __future__ import annotations

from collections import Counter

from fedpers.privacy.audit.report import (
    DeviceEvent,
    DevicesSection,
    HistogramBin,
    RoundParticipation,
)
from fedpers.simulation.audit.sections.common import summary_stats
from fedpers.simulation.audit.sources import RunSources

__all__ = ["devices_section"]

_CONSENT_REASONS = ("no_p10_consent", "gpc_opt_out")
_BUDGET_REASONS = ("budget_spent",)


def devices_section(src: RunSources) -> DevicesSection:
    """Section 2: participation, drop reasons, record-level ledgers, refusals."""
    accepted: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    budget: list[DeviceEvent] = []
    consent: list[DeviceEvent] = []
    for row in src.participants:
        status = str(row.get("status"))
        device = int(row["device_id"])
        if status == "accepted":
            accepted[device] += 1
            continue
        reason = str(row.get("reason") or "unspecified")
        reasons[f"{status}: {reason}"] += 1
        event = DeviceEvent(round=int(row["round"]), device_id=device, status=status, reason=reason)
        if reason in _BUDGET_REASONS:
            budget.append(event)
        if reason in _CONSENT_REASONS:
            consent.append(event)
    num_devices = src.privacy.get("num_devices") or src.config.get("num_devices")
    n_total = int(num_devices) if num_devices is not None else None
    hist_counts: Counter[int] = Counter(accepted.values())
    if n_total is not None:
        hist_counts[0] = max(0, n_total - len(accepted))
    ledgers = [d.ledger_epsilon for d in src.devices.values() if d.ledger_epsilon is not None]
    return DevicesSection(
        num_devices=n_total,
        devices_participated=len(accepted),
        participation_histogram=[
            HistogramBin(rounds_participated=k, devices=v) for k, v in sorted(hist_counts.items())
        ],
        rounds=[
            RoundParticipation(
                round=int(r["round"]),
                status=str(r.get("status")),
                sampled=int(r.get("sampled") or 0),
                participants=int(r.get("participants") or 0),
                dropped=int(r.get("dropped") or 0),
                refused=int(r.get("refused") or 0),
            )
            for r in src.rounds
        ],
        drop_reasons=dict(sorted(reasons.items())),
        record_level_epsilon=summary_stats(ledgers) if ledgers else None,
        ledger_source=(
            f"privacy ledgers of {len(src.devices)} device stores in {src.devices_dir}"
            if src.devices_dir is not None
            else "no device stores available on this machine: record-level figures unknown"
        ),
        budget_exhaustion_events=budget,
        consent_refusals=consent,
    )
