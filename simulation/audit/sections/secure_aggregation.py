"""Section 3, secure aggregation: the scheme, its parameters and who held the secret key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedpers.privacy.audit.report import (
    KeyCustody,
    SecureAggregationSection,
    Verdict,
)
from fedpers.simulation.audit.sections.common import verdict_of
from fedpers.simulation.audit.sources import RunSources, finite_or_none

__all__ = ["secure_aggregation_section", "secure_aggregation_verdict"]


def _secagg_description(privacy: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for value in privacy.values():
        if isinstance(value, Mapping) and "scheme" in value and "key_custody" in value:
            return value
    return None


def secure_aggregation_section(src: RunSources) -> SecureAggregationSection:
    """Section 3: scheme, parameters, key custody, bytes per device."""
    p = src.privacy
    enabled = str(p.get("secure_aggregation") or "none") not in ("none", "")
    desc = _secagg_description(p)
    if not enabled:
        return SecureAggregationSection(
            enabled=False,
            scheme=None,
            parameters={},
            security_bits=None,
            key_custody=[],
            bytes_per_device=None,
            coordinator_held_secret_key=None,
            evidence=(
                "Secure aggregation was off in this run (privacy table: "
                f"secure_aggregation={p.get('secure_aggregation')!r})."
            ),
        )
    custody: list[KeyCustody] = []
    held: bool | None = None
    params: dict[str, Any] = {}
    bits: int | None = None
    scheme: str | None = str(p.get("secure_aggregation"))
    per_device: float | None = None
    evidence = "The run database records no description of the secure-aggregation set-up."
    if desc is not None:
        scheme = str(desc.get("scheme", scheme))
        params = {k: v for k, v in desc.items() if k != "key_custody"}
        bits = int(desc["security_bits"]) if desc.get("security_bits") is not None else None
        per_device = finite_or_none(desc.get("bytes_per_update"))
        for component, text in dict(desc.get("key_custody") or {}).items():
            custody.append(KeyCustody(component=str(component), keys=[str(text)]))
        if "public_context_is_private" in desc:
            held = bool(desc["public_context_is_private"])
            evidence = "The context the coordinator loaded was checked with is_private(): " + (
                "it held a SECRET key." if held else "it held no secret key."
            )
    return SecureAggregationSection(
        enabled=True,
        scheme=scheme,
        parameters=params,
        security_bits=bits,
        key_custody=custody,
        bytes_per_device=per_device,
        coordinator_held_secret_key=held,
        evidence=evidence,
    )


def secure_aggregation_verdict(s: SecureAggregationSection) -> Verdict:
    """Whether the coordinator held no secret key (secure aggregation on)."""
    verdict = verdict_of("secure_aggregation_keys", "Coordinator never held a secret key")
    if not s["enabled"]:
        return verdict(
            "not_applicable",
            "Secure aggregation was off: the coordinator saw each device's update "
            "(clipped, when the run clips) in plaintext.",
        )
    if s["coordinator_held_secret_key"] is None:
        return verdict(
            "fail",
            "Secure aggregation was on but the run recorded no evidence about key custody.",
        )
    held = s["coordinator_held_secret_key"]
    return verdict(
        "fail" if held else "pass",
        s["evidence"],
    )
