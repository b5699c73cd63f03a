"""Section 1, the guarantee: the claimed epsilon per round, re-derived and cross-checked.

The accountant's events are re-derived from the recorded rounds and the final epsilon is
recomputed with independent accountants; :func:`budget_verdict` and
:func:`accountants_verdict` judge the section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedpers.privacy.audit.report import (
    ClippingInfo,
    CrossCheck,
    EpsilonPoint,
    GuaranteeSection,
    SamplingInfo,
    Verdict,
)
from fedpers.privacy.dp.accounting import (
    RoundEvent,
    cross_check_history,
    epsilon_from_history,
)
from fedpers.privacy.errors import ConfigError, PrivacyAccountingError
from fedpers.simulation.audit.sections.common import summary_stats, verdict_of
from fedpers.simulation.audit.sources import RunSources, finite_or_none

__all__ = [
    "ACCOUNTANT_TOLERANCE",
    "accountants_verdict",
    "budget_verdict",
    "guarantee_section",
    "round_events",
]

ACCOUNTANT_TOLERANCE = 0.02
"""Largest relative difference between two accountants' epsilons that counts as agreement."""


def _completed(rounds: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rounds if r.get("status") == "completed"]


def round_events(
    rounds: Sequence[Mapping[str, Any]], privacy: Mapping[str, Any]
) -> list[RoundEvent]:
    """The accountant's events re-derived from the recorded rounds.

    Only completed rounds release anything (skipped rounds change nothing and are not
    accounted, as the run database says); each contributes its recorded noise multiplier
    with the recorded sampling: Poisson with its rate, a fixed cohort of the recorded size
    out of ``num_devices``, or everyone (rate 1).

    Raises:
        ConfigError: when a completed round lacks its noise multiplier or sampling rate.
    """
    method = str(privacy.get("sampling") or "poisson")
    events: list[RoundEvent] = []
    for row in _completed(rounds):
        sigma = finite_or_none(row.get("noise_multiplier"))
        if sigma is None:
            raise ConfigError(f"round {row.get('round')}: no noise multiplier recorded")
        if method == "fixed":
            population = int(privacy.get("num_devices") or 0)
            cohort = int(privacy.get("cohort_size") or 0)
            events.append(RoundEvent.fixed(sigma, population, cohort))
            continue
        rate = finite_or_none(row.get("sample_rate"))
        if rate is None:
            rate = 1.0 if method == "all" else finite_or_none(privacy.get("sample_rate"))
        if rate is None:
            raise ConfigError(f"round {row.get('round')}: no sampling rate recorded")
        events.append(RoundEvent.poisson(sigma, rate))
    return events


def _reported_epsilon(rounds: Sequence[Mapping[str, Any]]) -> float | None:
    values = [finite_or_none(r.get("epsilon")) for r in rounds]
    finite = [v for v in values if v is not None]
    return finite[-1] if finite else None


def _relative(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return 0.0 if a == 0 else math.inf
    return abs(a - b) / abs(b)


def _recomputation(
    accountant: str, epsilon: float, reported: float | None, detail: str
) -> CrossCheck:
    """A recomputed ``epsilon`` that agrees when within the tolerance of the reported one."""
    rel = _relative(reported, epsilon)
    return CrossCheck(
        accountant=accountant,
        epsilon=finite_or_none(epsilon),
        reported_epsilon=reported,
        relative_difference=finite_or_none(rel),
        tolerance=ACCOUNTANT_TOLERANCE,
        agrees=rel is not None and rel <= ACCOUNTANT_TOLERANCE,
        detail=detail,
    )


def _cross_checks(
    events: Sequence[RoundEvent], delta: float, accountant: str, reported: float | None
) -> list[CrossCheck]:
    """Recompute the final epsilon from the recorded rounds with independent accountants."""
    checks: list[CrossCheck] = []
    acc: Any = accountant if accountant in ("rdp", "prv") else "rdp"
    try:
        independent = cross_check_history(events, delta, acc)
        checks.append(
            _recomputation(
                independent.reference_method,
                independent.reference_epsilon,
                reported,
                f"Google dp-accounting recomputed epsilon from the {len(events)} recorded "
                "rounds (noise multiplier and sampling of each), the same analysis as the "
                f"run's {independent.method} in another library.",
            )
        )
    except PrivacyAccountingError as exc:
        recomputed = epsilon_from_history(events, delta, acc)
        checks.append(
            _recomputation(
                recomputed.accountant,
                recomputed.epsilon,
                reported,
                f"Recomputed from the recorded rounds; no independent library: {exc}",
            )
        )
    if acc == "rdp":
        try:
            prv = epsilon_from_history(events, delta, "prv")
        except PrivacyAccountingError:
            return checks
        rel = _relative(prv.epsilon, reported)
        checks.append(
            CrossCheck(
                accountant=prv.accountant,
                epsilon=finite_or_none(prv.epsilon),
                reported_epsilon=reported,
                relative_difference=finite_or_none(rel),
                tolerance=ACCOUNTANT_TOLERANCE,
                agrees=reported is not None
                and prv.epsilon <= reported * (1 + ACCOUNTANT_TOLERANCE),
                detail=(
                    "Opacus PRV accountant (numerically tight) on the same rounds; RDP is an "
                    "upper bound, so PRV is expected to be lower and must not exceed the "
                    "reported figure by more than the tolerance."
                ),
            )
        )
    return checks


def guarantee_section(src: RunSources) -> GuaranteeSection:
    """Section 1: the claimed guarantee, epsilon per round and the accountant cross-checks."""
    p = src.privacy
    rounds = src.rounds
    private = bool(p.get("user_level")) and finite_or_none(p.get("noise_multiplier")) not in (
        None,
        0.0,
    )
    unit_raw = p.get("unit")
    unit = unit_raw if unit_raw in ("user", "record", "user+record") else "none"
    reported = _reported_epsilon(rounds) if private else None
    delta = finite_or_none(p.get("delta"))
    clip_norms = [finite_or_none(r.get("clip_norm")) for r in rounds]
    clip_norms_f = [c for c in clip_norms if c is not None]
    fractions = [finite_or_none(r.get("clipped_fraction")) for r in _completed(rounds)]
    sampled = [float(r.get("sampled") or 0) for r in rounds]
    notes: list[str] = []
    cross: list[CrossCheck] = []
    completed = _completed(rounds)
    if private and delta is not None:
        events = round_events(rounds, p)
        cross = _cross_checks(events, delta, str(p.get("accountant") or "rdp"), reported)
    else:
        notes.append(
            "This run is not differentially private at the user level: no epsilon applies "
            "to the published model."
        )
    skipped = [r for r in rounds if r.get("status") == "skipped"]
    if skipped:
        notes.append(
            f"{len(skipped)} round(s) were skipped (too few updates); a skipped round "
            "publishes nothing and is not accounted."
        )
    stopped = [r for r in rounds if r.get("status") == "stopped"]
    if stopped:
        notes.append(f"The run stopped early: {stopped[-1].get('reason') or 'no reason recorded'}.")
    if p.get("clipping") == "adaptive":
        notes.append(
            "Adaptive clipping: the noisy count of unclipped updates is a second release per "
            "round; the recorded noise multiplier is the combined one that accounts for both."
        )
    if p.get("sampling") == "fixed":
        notes.append(
            "Fixed-size cohorts are accounted as sampling without replacement under "
            "replace-one adjacency, as they were actually drawn."
        )
    if str(p.get("noise_placement") or "").startswith("distributed"):
        notes.append(
            "Noise is added by the devices as shares; the guarantee assumes the devices "
            "add their shares honestly (see docs/threat-model.md)."
        )
    return GuaranteeSection(
        private=private,
        unit_of_privacy=unit,  # type: ignore[typeddict-item]
        epsilon=reported,
        delta=delta,
        epsilon_budget=finite_or_none(p.get("target_epsilon")),
        accountant=(str(p["accountant"]) if p.get("accountant") and private else None),
        noise_multiplier=finite_or_none(p.get("noise_multiplier")) if private else None,
        clipping=ClippingInfo(
            mode=(p.get("clipping") or "none") if private else "none",  # type: ignore[typeddict-item]
            initial_norm=clip_norms_f[0] if clip_norms_f else None,
            final_norm=clip_norms_f[-1] if clip_norms_f else None,
            mean_clipped_fraction=summary_stats(f for f in fractions if f is not None)["mean"],
        ),
        sampling=SamplingInfo(
            method=p.get("sampling"),
            rate=finite_or_none(p.get("sample_rate")),
            mean_sampled=float(np.mean(sampled)) if sampled else None,
        ),
        rounds=len(completed),
        epsilon_by_round=[
            EpsilonPoint(round=int(r["round"]), epsilon=float(e))
            for r in rounds
            if private and (e := finite_or_none(r.get("epsilon"))) is not None
        ],
        cross_checks=cross,
        notes=notes,
    )


def budget_verdict(g: GuaranteeSection) -> Verdict:
    """Whether the final epsilon, and its recomputation, stay within the configured budget."""
    verdict = verdict_of("epsilon_within_budget", "Privacy budget respected")
    if not g["private"]:
        return verdict(
            "not_applicable",
            "The run is labelled non-private and reports no epsilon, as it must.",
        )
    eps, budget = g["epsilon"], g["epsilon_budget"]
    if eps is None:
        return verdict("fail", "The run is private but recorded no epsilon.")
    recomputed = [c["epsilon"] for c in g["cross_checks"] if c["epsilon"] is not None]
    if budget is None:
        return verdict(
            "not_applicable",
            f"No budget was configured (a noise multiplier was given); epsilon is {eps:.4g} at "
            f"delta {g['delta']:.3g}.",
        )
    worst = max([eps, *recomputed[:1]])
    ok = worst <= budget * (1 + 1e-9)
    return verdict(
        "pass" if ok else "fail",
        f"Epsilon {eps:.4g} (independent recomputation "
        f"{recomputed[0]:.4g}) {'is within' if ok else 'EXCEEDS'} the budget of {budget:.4g}."
        if recomputed
        else f"Epsilon {eps:.4g} {'is within' if ok else 'EXCEEDS'} the budget of {budget:.4g}.",
    )


def accountants_verdict(g: GuaranteeSection) -> Verdict:
    """Whether the second accountants agree with the reported epsilon within 2%."""
    verdict = verdict_of("accountants_agree", "Independent accountants agree")
    if not g["private"]:
        return verdict("not_applicable", "No epsilon to cross-check.")
    if not g["cross_checks"]:
        return verdict("fail", "The epsilon could not be recomputed.")
    bad = [c for c in g["cross_checks"] if not c["agrees"]]
    parts = [
        f"{c['accountant']}: {_num(c['epsilon'])} ({_pct(c['relative_difference'])} apart)"
        for c in g["cross_checks"]
    ]
    return verdict(
        "fail" if bad else "pass",
        f"Reported epsilon {_num(g['epsilon'])}; " + "; ".join(parts) + ".",
    )


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
