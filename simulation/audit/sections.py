"""Report sections 1-5 and 8 from what a run recorded, and the verdicts they carry.

Each ``*_section`` function turns :class:`~fedpers.simulation.audit.sources.RunSources`
(or plain rows) into one TypedDict of :mod:`fedpers.privacy.audit.report`; each
``*_verdict`` function turns a section into one plain-language :class:`Verdict`. Nothing
here trains a model or reads a file: the attacks live in
:mod:`fedpers.simulation.audit.attacks`, reading in :mod:`.audit_sources`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedpers.client.protocol import EVAL_KEYS
from fedpers.privacy.audit.report import (
    ClippingInfo,
    ConsentRound,
    ConsentSection,
    CrossCheck,
    DeviceEvent,
    DevicesSection,
    EgressEntry,
    EgressSection,
    EgressViolation,
    EpsilonPoint,
    ErasureRecord,
    GuaranteeSection,
    HistogramBin,
    KeyCustody,
    RoundParticipation,
    SamplingInfo,
    SecureAggregationSection,
    SummaryStats,
    UtilityPoint,
    Verdict,
    VerdictId,
    VerdictStatus,
)
from fedpers.privacy.consent import ConsentState, Purpose, may_train
from fedpers.privacy.dp.accounting import (
    RoundEvent,
    cross_check_history,
    epsilon_from_history,
)
from fedpers.privacy.errors import ConfigError, PrivacyAccountingError
from fedpers.simulation.audit.sources import DeviceRecord, RunSources, finite_or_none

__all__ = [
    "ACCOUNTANT_TOLERANCE",
    "SHARED_ARRAY_NAMES",
    "accountants_verdict",
    "budget_verdict",
    "classify_egress",
    "consent_section",
    "consent_verdict",
    "devices_section",
    "egress_section",
    "egress_verdict",
    "erasure_verdict",
    "guarantee_section",
    "round_events",
    "secure_aggregation_section",
    "secure_aggregation_verdict",
    "shared_array_shapes",
    "summary_stats",
    "utility_points",
    "verdict_of",
]

ACCOUNTANT_TOLERANCE = 0.02
"""Largest relative difference between two accountants' epsilons that counts as agreement."""

SHARED_ARRAY_NAMES = ("item_embedding", "item_bias", "feature_tower")

_DEVICE_METRICS = frozenset({"norm", "clipped", "n-examples", "loss", "indicator"})
_SUM_METRICS = frozenset(
    {"count", "clipped", "n-examples", "loss-sum", "norm-sum", "norm-max", "indicator"}
)
_NODE_METRICS = frozenset({"partition-id", "num-partitions", "device-id"})
_EVAL_METRICS = frozenset({"count", *EVAL_KEYS})
_FLOAT_DTYPES = frozenset({"float32", "float64", "float16"})
_CIPHERTEXT_DTYPES = frozenset({"uint8", "bytes", "int8"})
_DEVICE_SUFFIX = re.compile(r"^(update|metrics)\.\d+$")
_CONSENT_REASONS = ("no_p10_consent", "gpc_opt_out")
_BUDGET_REASONS = ("budget_spent",)


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


# -- 1. guarantee ------------------------------------------------------------------------------


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


# -- 2. devices ----------------------------------------------------------------------------------


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


# -- 3. secure aggregation ---------------------------------------------------------------------


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


# -- 4. egress ---------------------------------------------------------------------------------


def shared_array_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shared parameters a device may send, by name, from the run configuration.

    Raises:
        ConfigError: when the configuration lacks ``n_items``.
    """
    if config.get("n_items") is None:
        raise ConfigError("the run configuration has no n_items")
    n_items, dim = int(config["n_items"]), int(config.get("dim") or 32)
    shapes: dict[str, tuple[int, ...]] = {
        "item_embedding": (n_items, dim),
        "item_bias": (n_items,),
    }
    features = int(config.get("n_item_features") or 0)
    if features:
        shapes["feature_tower"] = (features, dim)
    return shapes


def _record_pattern(record: str) -> str:
    return re.sub(r"\.\d+$", ".<device>", record) if _DEVICE_SUFFIX.match(record) else record


def classify_egress(
    row: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    dim: int,
    secure_aggregation: bool,
) -> str | None:
    """Why one catalogued payload entry should not have left a device (``None``: allowed).

    The allow-list: shared parameters with exactly their wire shape and a float dtype in
    ``update.*`` records; with secure aggregation, byte arrays (ciphertexts) in
    ``update.*`` records; the scalar training metrics a device reports about its update;
    the sums a cohort reports (including its device ids: participation is visible to
    the coordinator by design); status codes per device; evaluation sums; the handshake.
    Everything else is a violation; a float array shaped like a user vector and an
    integer array (which could carry item identifiers) are named as such.

    Args:
        row: an ``egress`` row (``record``, ``name``, ``kind``, ``shape``, ``dtype``).
        shapes: the allowed shared parameters (:func:`shared_array_shapes`).
        dim: the embedding dimension (the private user vector's length).
        secure_aggregation: whether ciphertexts are expected.

    Returns:
        The reason, or ``None`` when the entry is allowed.
    """
    record, name, kind = str(row.get("record")), str(row.get("name")), str(row.get("kind"))
    dtype = str(row.get("dtype"))
    raw_shape = row.get("shape")
    shape = (
        tuple(raw_shape) if isinstance(raw_shape, list | tuple) else tuple(_json_list(raw_shape))
    )
    is_update = record.startswith("update.")
    if kind == "array":
        if is_update and name in shapes and shape == shapes[name] and dtype in _FLOAT_DTYPES:
            return None
        if is_update and secure_aggregation and dtype in _CIPHERTEXT_DTYPES and len(shape) == 1:
            return None
        if shape == (dim,) and dtype in _FLOAT_DTYPES:
            return f"float array of shape ({dim},): the shape of a private user vector"
        if dtype.startswith(("int", "uint")) or dtype in ("bool",):
            return f"{dtype} array: could carry item identifiers or raw events"
        return f"array {name!r} {list(shape)} {dtype} is not a shared parameter in wire shape"
    if kind == "metric":
        scalar = len(shape) == 0
        if record.startswith("metrics.") and record != "metrics.sum":
            allowed = scalar and name in _DEVICE_METRICS
        elif record == "metrics.sum":
            allowed = (scalar and name in _SUM_METRICS) or (name == "device-ids" and dtype == "int")
        elif record == "status":
            allowed = scalar and name.isdigit()
        elif record == "eval":
            allowed = scalar and name in _EVAL_METRICS
        elif record == "node":
            allowed = scalar and name in _NODE_METRICS
        else:
            allowed = False
        return None if allowed else f"metric {record}/{name} {list(shape)} is not on the allow-list"
    if kind == "error":
        return None
    return f"{kind} entry {record}/{name}: devices send no {kind} records (could carry raw text)"


def _json_list(value: Any) -> list[int]:
    if value in (None, ""):
        return []
    parsed = json.loads(str(value))
    return [int(v) for v in parsed]


def egress_section(
    rows: Iterable[Mapping[str, Any]],
    config: Mapping[str, Any],
    secure_aggregation: bool,
    max_violations: int = 200,
) -> EgressSection:
    """Section 4: group every catalogued payload entry and check it against the allow-list.

    Args:
        rows: the run database's ``egress`` rows (streamed).
        config: the run configuration (model shape).
        secure_aggregation: whether ciphertexts are expected.
        max_violations: how many violations to list (all are counted in the verdict).
    """
    shapes = shared_array_shapes(config)
    dim = int(config.get("dim") or 32)
    groups: dict[tuple[str, str, str, str, tuple[int, ...], str], list[int]] = defaultdict(
        lambda: [0, 0]
    )
    allowed_of: dict[tuple[str, str, str, str, tuple[int, ...], str], bool] = {}
    violations: list[EgressViolation] = []
    n_violations = 0
    entries = 0
    total = 0
    protections: dict[str, int] = defaultdict(int)
    for row in rows:
        entries += 1
        protections[str(row.get("protection") or "not recorded")] += 1
        nbytes = int(row.get("bytes") or 0)
        total += nbytes
        shape = tuple(_json_list(row.get("shape")))
        record = str(row.get("record"))
        name = str(row.get("name"))
        key = (
            str(row.get("message_type")),
            _record_pattern(record),
            "<device>" if record == "status" and name.isdigit() else name,
            str(row.get("kind")),
            shape,
            str(row.get("dtype")),
        )
        reason = classify_egress({**row, "shape": list(shape)}, shapes, dim, secure_aggregation)
        group = groups[key]
        group[0] += 1
        group[1] += nbytes
        allowed_of[key] = allowed_of.get(key, True) and reason is None
        if reason is not None:
            n_violations += 1
            if len(violations) < max_violations:
                device = row.get("device_id")
                violations.append(
                    EgressViolation(
                        round=int(row.get("round") or 0),
                        device_id=None if device is None else int(device),
                        record=record,
                        name=name,
                        shape=list(shape),
                        dtype=str(row.get("dtype")),
                        reason=reason,
                    )
                )
    catalogue = [
        EgressEntry(
            message_type=k[0],
            record=k[1],
            name=k[2],
            kind=k[3],
            shape=list(k[4]),
            dtype=k[5],
            count=v[0],
            bytes_total=v[1],
            allowed=allowed_of[k],
        )
        for k, v in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
    ]
    checks = [
        "Arrays: only the shared parameters ("
        + ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
        + ") in float dtypes, inside update records"
        + ("; with secure aggregation, byte arrays (ciphertexts)." if secure_aggregation else "."),
        f"A float array of shape [{dim}] would be a private user vector; any integer array "
        "could carry item identifiers or raw events: both are violations.",
        "Metrics: only scalar training statistics (norm, clipped, n-examples, loss, "
        "indicator), cohort sums and their device ids, status codes, evaluation sums and "
        "the handshake.",
        "No configuration or text record may come from a device.",
    ]
    checks.append(_protection_line(protections))
    if n_violations > len(violations):
        checks.append(f"{n_violations} violations in all; the first {len(violations)} are listed.")
    return EgressSection(
        payload_entries=entries,
        total_bytes=total,
        catalogue=catalogue,
        allowed_arrays=[
            {"name": n, "shape": list(s), "dtype": "float32"} for n, s in shapes.items()
        ],
        violations=violations,
        checks=checks,
    )


def _protection_line(protections: Mapping[str, int]) -> str:
    """What protected the recorded entries (run.db ``egress.protection``), in one line."""
    counts = ", ".join(f"{name} {n}" for name, n in sorted(protections.items()))
    line = f"Protection of the recorded entries (the egress catalogue): {counts or 'none'}."
    if protections.get("monitoring_plaintext"):
        line += (
            " The run set monitoring_metrics = plaintext: the monitoring_plaintext entries "
            "are per-device statistics sent in plaintext, NOT covered by the DP guarantee."
        )
    return line


def egress_verdict(e: EgressSection) -> Verdict:
    """Whether no payload carried raw events, item identifiers or a user vector."""
    verdict = verdict_of("egress_clean", "No raw events, item ids or user vectors left a device")
    if e["payload_entries"] == 0:
        return verdict("fail", "The run recorded no egress catalogue to check.")
    n = len(e["violations"])
    if n:
        first = e["violations"][0]
        return verdict(
            "fail",
            f"{n} payload entr{'y' if n == 1 else 'ies'} broke the allow-list, e.g. round "
            f"{first['round']} device {first['device_id']}: {first['reason']}.",
        )
    return verdict(
        "pass",
        f"All {e['payload_entries']} recorded payload entries ({e['total_bytes']} bytes) "
        "were shared-parameter updates or scalar statistics on the allow-list.",
    )


# -- 5. consent --------------------------------------------------------------------------------


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


# -- 8. utility ----------------------------------------------------------------------------------


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
