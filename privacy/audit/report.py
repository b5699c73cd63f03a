"""The data model of an audit report (``report.json``).

Each section of the report is a :class:`~typing.TypedDict`, so the builder is type-checked
against the same definitions from which :mod:`fedpers.privacy.audit.schema` derives the
published JSON Schema (``docs/report.schema.json``). Every key is always present; a value
that does not apply is ``null`` rather than missing. Numbers are finite (``NaN`` and
infinities are written as ``null``).

Each ``Attributes`` section below is also the description of the fields in the schema.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args

__all__ = [
    "SCHEMA_VERSION",
    "VERDICT_IDS",
    "AttackResult",
    "AuditReport",
    "ClippingInfo",
    "ClopperPearsonResult",
    "ConsentRound",
    "ConsentSection",
    "CraftedUpdateAuditSection",
    "CraftedVariant",
    "CrossCheck",
    "DeviceEvent",
    "DevicesSection",
    "EgressEntry",
    "EgressSection",
    "EgressViolation",
    "EmpiricalAuditSection",
    "EpsilonPoint",
    "ErasureRecord",
    "GroupGap",
    "GroupMetrics",
    "GuaranteeSection",
    "HistogramBin",
    "InspectionScenario",
    "KeyCustody",
    "NonPrivateReference",
    "OneRunGuessResult",
    "OneRunResult",
    "RoundParticipation",
    "RunInfo",
    "SamplingInfo",
    "SecureAggregationSection",
    "SummaryStats",
    "UpdateInspectionSection",
    "UtilityPoint",
    "UtilitySection",
    "Verdict",
    "VerdictId",
    "VerdictStatus",
]

SCHEMA_VERSION = "1.1.0"
"""Semantic version of the report format; bump the major version on breaking changes."""

VerdictStatus = Literal["pass", "fail", "not_applicable"]
VerdictId = Literal[
    "epsilon_within_budget",
    "accountants_agree",
    "egress_clean",
    "consent_respected",
    "erasures_honoured",
    "secure_aggregation_keys",
    "empirical_bound_below_claim",
]
VERDICT_IDS: tuple[str, ...] = get_args(VerdictId)
"""Every verdict a report carries, in the order the report lists them."""

UnitOfPrivacy = Literal["user", "record", "user+record", "none"]
Metric = Literal["hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full"]


class Verdict(TypedDict):
    """One plain-language verdict; ``fedpers audit --check`` fails when any has failed.

    Attributes:
        id: stable identifier of the check.
        title: what is checked, in a few words.
        status: ``pass``, ``fail`` or ``not_applicable`` (the check does not apply to this run).
        summary: one or two sentences for a privacy officer, with the figures behind it.
    """

    id: VerdictId
    title: str
    status: VerdictStatus
    summary: str


class RunInfo(TypedDict):
    """Which run was audited.

    Attributes:
        run_dir: the run directory as given to the auditor.
        dataset: dataset name from the run configuration.
        num_devices: number of devices in the federation.
        rounds_completed: rounds that completed (skipped and stopped rounds excluded).
        rounds_recorded: rounds recorded in the run database.
        private: whether the published model carries a differential-privacy guarantee.
        label: the run's own label for its privacy (e.g. ``user-level DP`` or ``non-private``).
        config: the run configuration as stored in ``config.json``.
    """

    run_dir: str
    dataset: str | None
    num_devices: int | None
    rounds_completed: int
    rounds_recorded: int
    private: bool
    label: str
    config: dict[str, Any]


class EpsilonPoint(TypedDict):
    """Epsilon spent after a round.

    Attributes:
        round: round number.
        epsilon: epsilon after that round, as the run's accountant reported it.
    """

    round: int
    epsilon: float


class ClippingInfo(TypedDict):
    """How updates were clipped.

    Attributes:
        mode: ``fixed``, ``adaptive`` or ``none``.
        initial_norm: clip norm of the first round.
        final_norm: clip norm of the last recorded round.
        mean_clipped_fraction: mean over rounds of the fraction of updates that were clipped.
    """

    mode: Literal["fixed", "adaptive", "none"]
    initial_norm: float | None
    final_norm: float | None
    mean_clipped_fraction: float | None


class SamplingInfo(TypedDict):
    """How devices were chosen each round.

    Attributes:
        method: ``poisson`` (each device independently with rate q), ``fixed`` (fixed-size
            cohorts) or ``all`` (every device every round).
        rate: the sampling rate q used by the accountant.
        mean_sampled: mean number of devices sampled per round.
    """

    method: str | None
    rate: float | None
    mean_sampled: float | None


class CrossCheck(TypedDict):
    """An independent recomputation of epsilon from the recorded parameters.

    Attributes:
        accountant: the second accountant.
        epsilon: its epsilon for the recorded (sigma, q, rounds, delta).
        reported_epsilon: the epsilon the run reported.
        relative_difference: ``|second - reported| / reported``.
        tolerance: the largest relative difference accepted.
        agrees: ``relative_difference <= tolerance``.
        detail: how the recomputation was done.
    """

    accountant: str
    epsilon: float | None
    reported_epsilon: float | None
    relative_difference: float | None
    tolerance: float
    agrees: bool
    detail: str


class GuaranteeSection(TypedDict):
    """The differential-privacy guarantee the run claims.

    Attributes:
        private: whether any DP guarantee is claimed.
        unit_of_privacy: ``user`` (a device's whole history), ``record`` (one event), both
            or ``none``.
        epsilon: final epsilon of the published model (``null`` when non-private).
        delta: the delta epsilon is stated at.
        epsilon_budget: the target epsilon the run was configured to stop at, if any.
        accountant: the accountant whose epsilon the run reports.
        noise_multiplier: sigma: noise standard deviation divided by the clip norm.
        clipping: clipping of device updates.
        sampling: selection of devices per round.
        rounds: rounds the accountant counted.
        epsilon_by_round: epsilon after every recorded round.
        cross_checks: independent recomputations of the final epsilon.
        notes: caveats in plain language.
    """

    private: bool
    unit_of_privacy: UnitOfPrivacy
    epsilon: float | None
    delta: float | None
    epsilon_budget: float | None
    accountant: str | None
    noise_multiplier: float | None
    clipping: ClippingInfo
    sampling: SamplingInfo
    rounds: int
    epsilon_by_round: list[EpsilonPoint]
    cross_checks: list[CrossCheck]
    notes: list[str]


class HistogramBin(TypedDict):
    """One bar of the participation histogram.

    Attributes:
        rounds_participated: number of rounds a device took part in.
        devices: number of devices that took part in exactly that many rounds.
    """

    rounds_participated: int
    devices: int


class RoundParticipation(TypedDict):
    """What happened to the devices sampled in one round.

    Attributes:
        round: round number.
        status: the round's status (``completed``, ``skipped``, ``stopped``).
        sampled: devices sampled.
        participants: devices whose update was aggregated.
        dropped: devices dropped (failures, time-outs, invalid updates).
        refused: devices that refused (e.g. no consent, budget exhausted).
    """

    round: int
    status: str
    sampled: int
    participants: int
    dropped: int
    refused: int


class SummaryStats(TypedDict):
    """Summary of a distribution.

    Attributes:
        count: number of values.
        min: smallest value.
        median: median.
        mean: mean.
        p90: 90th percentile.
        max: largest value.
    """

    count: int
    min: float | None
    median: float | None
    mean: float | None
    p90: float | None
    max: float | None


class DeviceEvent(TypedDict):
    """One device-level event worth reporting (a refusal, a budget exhaustion).

    Attributes:
        round: round number.
        device_id: the device.
        status: participant status recorded by the coordinator.
        reason: the recorded reason.
    """

    round: int
    device_id: int
    status: str
    reason: str


class DevicesSection(TypedDict):
    """Participation and device-side privacy.

    Attributes:
        num_devices: devices in the federation.
        devices_participated: devices that took part in at least one round.
        participation_histogram: how many devices took part in how many rounds.
        rounds: per-round participation.
        drop_reasons: number of dropped, refused, failed or timed-out device-rounds by reason.
        record_level_epsilon: distribution of the record-level epsilon in the device
            ledgers (``null`` when no device store holds a ledger entry).
        ledger_source: where the record-level figures come from.
        budget_exhaustion_events: device-rounds refused or stopped because a budget was spent.
        consent_refusals: device-rounds refused for missing consent.
    """

    num_devices: int | None
    devices_participated: int
    participation_histogram: list[HistogramBin]
    rounds: list[RoundParticipation]
    drop_reasons: dict[str, int]
    record_level_epsilon: SummaryStats | None
    ledger_source: str
    budget_exhaustion_events: list[DeviceEvent]
    consent_refusals: list[DeviceEvent]


class KeyCustody(TypedDict):
    """Which component held which key.

    Attributes:
        component: ``devices``, ``key_holder`` or ``coordinator``.
        keys: the keys it held (e.g. ``public``, ``secret``).
    """

    component: str
    keys: list[str]


class SecureAggregationSection(TypedDict):
    """Secure aggregation of device updates.

    Attributes:
        enabled: whether updates were encrypted before leaving the device.
        scheme: the scheme (e.g. ``ckks``).
        parameters: scheme parameters as recorded by the run.
        security_bits: claimed security level in bits.
        key_custody: which component held which key.
        bytes_per_device: mean bytes one device sent per round.
        coordinator_held_secret_key: whether the coordinator ever held a secret key
            (``null`` when not recorded).
        evidence: how the statement above was established.
    """

    enabled: bool
    scheme: str | None
    parameters: dict[str, Any]
    security_bits: int | None
    key_custody: list[KeyCustody]
    bytes_per_device: float | None
    coordinator_held_secret_key: bool | None
    evidence: str


class EgressEntry(TypedDict):
    """One kind of entry in device->coordinator payloads.

    Attributes:
        message_type: Flower message type (e.g. ``train``, ``evaluate``).
        record: record name in the message.
        name: entry name in the record.
        kind: ``array``, ``metric`` or ``config``.
        shape: shape of the entry.
        dtype: dtype of the entry.
        count: how many payloads carried it.
        bytes_total: bytes over all of them.
        allowed: whether the entry matches the allow-list (shared parameters in wire
            shape, ciphertexts, and aggregate scalar metrics).
    """

    message_type: str
    record: str
    name: str
    kind: str
    shape: list[int]
    dtype: str
    count: int
    bytes_total: int
    allowed: bool


class EgressViolation(TypedDict):
    """A payload entry that should never have left a device.

    Attributes:
        round: round number.
        device_id: sender (``null`` for a cohort sum).
        record: record name.
        name: entry name.
        shape: shape.
        dtype: dtype.
        reason: why it is a violation.
    """

    round: int
    device_id: int | None
    record: str
    name: str
    shape: list[int]
    dtype: str
    reason: str


class EgressSection(TypedDict):
    """The catalogue of everything devices sent to the coordinator.

    Attributes:
        payload_entries: number of recorded entries over all payloads.
        total_bytes: bytes over all payloads.
        catalogue: entries grouped by (message type, record, name, kind, shape, dtype).
        allowed_arrays: the shared-parameter arrays a device may send: name, shape, dtype.
        violations: entries that are not allowed.
        checks: the rules that were applied, in plain language.
    """

    payload_entries: int
    total_bytes: int
    catalogue: list[EgressEntry]
    allowed_arrays: list[dict[str, Any]]
    violations: list[EgressViolation]
    checks: list[str]


class ConsentRound(TypedDict):
    """Consent against participation in one round.

    Attributes:
        round: round number.
        consenting: devices with P10 (develop and improve services) granted at round start
            (``null`` when the device stores are not available).
        participating: devices whose update was aggregated.
        participants_without_consent: participating devices without P10 at round start.
    """

    round: int
    consenting: int | None
    participating: int
    participants_without_consent: int


class ErasureRecord(TypedDict):
    """An erased device and whether it stayed out of later rounds.

    Attributes:
        device_id: the device.
        erased_after_round: the last round before the erasure (``null`` when unknown).
        rounds_after_erasure: rounds after the erasure the device took part in (should be empty).
    """

    device_id: int
    erased_after_round: int | None
    rounds_after_erasure: list[int]


class ConsentSection(TypedDict):
    """Consent (IAB TCF v2.2 purposes) and erasure.

    Attributes:
        source: where consent states were read from.
        rounds: consenting and participating devices per round.
        non_consenting_participations: device-rounds aggregated without P10 at round start.
        erasures: erased devices and their later participation.
    """

    source: str
    rounds: list[ConsentRound]
    non_consenting_participations: int
    erasures: list[ErasureRecord]


class InspectionScenario(TypedDict):
    """The update-inspection attack on one view of a device's update.

    Attributes:
        name: ``plain`` (raw delta), ``clipped`` or ``clipped_noised`` (what a coordinator would
            see without secure aggregation).
        clip_norm: clip norm applied (``null`` for plain).
        noise_std: standard deviation of the Gaussian noise on the update (``null`` for none).
        auc: ROC AUC of item row norms for the device's true items.
        tpr_at_1pct_fpr: TPR at 1% FPR.
        recovered_in_top: true items among the top-``n_true`` scores.
        visible_to_coordinator: whether the coordinator can see this view in this run.
    """

    name: str
    clip_norm: float | None
    noise_std: float | None
    auc: float
    tpr_at_1pct_fpr: float
    recovered_in_top: int
    visible_to_coordinator: bool


class UpdateInspectionSection(TypedDict):
    """What an honest-but-curious coordinator could learn from one device's update.

    Attributes:
        status: ``measured`` or ``skipped``.
        device_id: the device whose update was inspected.
        n_items: items in the catalogue.
        n_true: items the device trained on.
        scenarios: the attack on each view of the update.
        statement: the conclusion in plain language.
    """

    status: Literal["measured", "skipped"]
    device_id: int | None
    n_items: int | None
    n_true: int | None
    scenarios: list[InspectionScenario]
    statement: str


class AttackResult(TypedDict):
    """A membership-inference attack on the canaries.

    Attributes:
        name: attack name.
        description: what the score is.
        auc: ROC AUC (included vs excluded canaries).
        tpr_at_1pct_fpr: TPR at 1% FPR.
        tpr_at_0_1pct_fpr: TPR at 0.1% FPR.
        roc: points ``[fpr, tpr]`` of the empirical ROC curve (at most 201, from (0, 0) to (1, 1)).
    """

    name: str
    description: str
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    roc: list[list[float]]


class OneRunGuessResult(TypedDict):
    """Guesses on the top and bottom k canaries.

    Attributes:
        k: guesses per side.
        guesses: total guesses (2k).
        correct: correct guesses.
        epsilon: lower bound from this k at the Bonferroni-split level.
    """

    k: int
    guesses: int
    correct: int
    epsilon: float


class OneRunResult(TypedDict):
    """The one-run epsilon lower bound (Steinke, Nasr and Jagielski 2023).

    Attributes:
        attack: the attack whose scores were used.
        epsilon: the empirical epsilon lower bound.
        confidence: its confidence.
        delta: the delta it is stated at.
        best: the guess giving the bound.
        per_k: every k tried.
    """

    attack: str
    epsilon: float
    confidence: float
    delta: float
    best: OneRunGuessResult
    per_k: list[OneRunGuessResult]


class ClopperPearsonResult(TypedDict):
    """The simple Clopper-Pearson epsilon lower bound from one threshold.

    Attributes:
        attack: the attack whose scores were used.
        epsilon: the bound.
        confidence: its confidence (valid for independent trials; canaries of one run are
            not, so read it as an indication).
        threshold: the score threshold, chosen on the first half of the canaries.
        tp: true positives on the second half.
        fp: false positives on the second half.
        tn: true negatives on the second half.
        fn: false negatives on the second half.
    """

    attack: str
    epsilon: float
    confidence: float
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int


class EmpiricalAuditSection(TypedDict):
    """An audit run with canaries, replicating the audited run's privacy configuration.

    Attributes:
        status: ``measured``, ``skipped`` or ``not_applicable``.
        statement: plain-language description of what was run and what it shows.
        configuration: the replicated privacy configuration (noise multiplier, clip norm,
            sample rate, rounds, delta) and the audit's own settings.
        audit_run_epsilon: the epsilon the accountant gives the audit run itself.
        canaries: number of canary devices.
        canaries_included: how many were included (each with probability 1/2).
        items_per_canary: planted items per canary device.
        attacks: membership-inference attacks on the published global models.
        one_run: the one-run lower bound.
        clopper_pearson: the simple bound.
        claimed_epsilon: the audited run's epsilon.
        seconds: wall time of the audit run.
    """

    status: Literal["measured", "skipped", "not_applicable"]
    statement: str
    configuration: dict[str, Any]
    audit_run_epsilon: float | None
    canaries: int
    canaries_included: int
    items_per_canary: int
    attacks: list[AttackResult]
    one_run: OneRunResult | None
    clopper_pearson: ClopperPearsonResult | None
    claimed_epsilon: float | None
    seconds: float | None


class CraftedVariant(TypedDict):
    """One variant of the crafted-update audit and the epsilons set beside it.

    Attributes:
        name: ``one round`` (every included canary in round 1) or ``all rounds`` (included
            canaries take part at the run's sampling rate in every round).
        accountant_epsilon: the accountant's epsilon for this variant (one round with
            ``q = 1``, or the run's claim).
        exact_gaussian_epsilon: the exact epsilon of the Gaussian mechanism for this
            variant (``sqrt(rounds)/sigma``-GDP), when it has a closed form.
        auc: ROC AUC of the likelihood-ratio score.
        one_run_epsilon: the one-run lower bound on the first ``one_run_canaries`` canaries.
        one_run_canaries: canaries the one-run bound uses.
        clopper_pearson_epsilon: the Clopper-Pearson lower bound over all canaries.
        measured_mu: the measured separation of included and excluded scores (Gaussian
            scores only).
        estimated_epsilon: the epsilon of a ``measured_mu``-GDP mechanism at the claim's
            delta: an estimate, not a bound.
    """

    name: str
    accountant_epsilon: float | None
    exact_gaussian_epsilon: float | None
    auc: float
    one_run_epsilon: float
    one_run_canaries: int
    clopper_pearson_epsilon: float
    measured_mu: float | None
    estimated_epsilon: float | None


class CraftedUpdateAuditSection(TypedDict):
    """The white-box audit with crafted canary updates of norm ``C`` on the run's mechanism.

    Attributes:
        status: ``measured``, ``skipped`` or ``not_applicable``.
        statement: plain-language description of what was run and what it shows.
        canaries: crafted canary devices.
        canaries_included: how many were included (each with probability 1/2).
        noise_multiplier: ``sigma`` of the audited mechanism.
        clip_norm: ``C`` of the audited mechanism.
        sample_rate: the per-round sampling rate of an included canary.
        rounds: rounds of the audited mechanism.
        delta: delta of the bounds and estimates.
        claimed_epsilon: the audited run's epsilon.
        variants: the one-round and the all-rounds audit.
        seconds: wall time of the audit.
    """

    status: Literal["measured", "skipped", "not_applicable"]
    statement: str
    canaries: int
    canaries_included: int
    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    rounds: int
    delta: float
    claimed_epsilon: float | None
    variants: list[CraftedVariant]
    seconds: float | None


class UtilityPoint(TypedDict):
    """Metrics after one round.

    Attributes:
        round: round number.
        hr10_sampled: hit rate at 10 against 99 sampled negatives.
        ndcg10_sampled: NDCG at 10 against 99 sampled negatives.
        hr10_full: hit rate at 10 in the full ranking.
        ndcg10_full: NDCG at 10 in the full ranking.
    """

    round: int
    hr10_sampled: float | None
    ndcg10_sampled: float | None
    hr10_full: float | None
    ndcg10_full: float | None


class GroupMetrics(TypedDict):
    """Metrics of one user group.

    Attributes:
        attribute: the user attribute (``gender``, ``age_band``).
        group: the group's value.
        users: users evaluated in the group.
        hr10_sampled: hit rate at 10 against 99 sampled negatives.
        ndcg10_sampled: NDCG at 10 against 99 sampled negatives.
        hr10_full: hit rate at 10 in the full ranking.
        ndcg10_full: NDCG at 10 in the full ranking.
    """

    attribute: str
    group: str
    users: int
    hr10_sampled: float | None
    ndcg10_sampled: float | None
    hr10_full: float | None
    ndcg10_full: float | None


class GroupGap(TypedDict):
    """The gap between the best and worst group of one attribute.

    Attributes:
        attribute: the user attribute.
        metric: the metric compared.
        best_group: group with the highest value.
        worst_group: group with the lowest value.
        gap: best minus worst.
    """

    attribute: str
    metric: Metric
    best_group: str
    worst_group: str
    gap: float


class NonPrivateReference(TypedDict):
    """The non-private counterpart of the run, for the cost of privacy.

    Attributes:
        status: ``from_run_dir`` (recorded by the run), ``computed`` (by the auditor) or
            ``unavailable``.
        source: where the figures come from.
        metrics: the reference's final metrics.
    """

    status: Literal["from_run_dir", "computed", "unavailable"]
    source: str
    metrics: dict[str, float | None]


class UtilitySection(TypedDict):
    """Recommendation quality and its fairness across user groups.

    Attributes:
        by_round: metrics after every round that reported them.
        final: metrics of the published model.
        groups: per-group metrics of the published model.
        gaps: best-worst gaps per attribute.
        group_source: how the per-group figures were obtained.
        non_private_reference: the non-private counterpart.
    """

    by_round: list[UtilityPoint]
    final: dict[str, float | None]
    groups: list[GroupMetrics]
    gaps: list[GroupGap]
    group_source: str
    non_private_reference: NonPrivateReference


class AuditReport(TypedDict):
    """A privacy audit report of one federated run.

    Attributes:
        schema_version: version of this format.
        generated_at: UTC time the report was generated (ISO 8601).
        fedpers_version: version of fedpers that generated it.
        run: the audited run.
        overall: ``fail`` when any verdict failed, else ``pass``.
        verdicts: the plain-language verdicts.
        guarantee: the claimed guarantee.
        devices: participation and device-side privacy.
        secure_aggregation: secure aggregation.
        egress: data egress catalogue.
        consent: consent and erasure.
        update_inspection: the update-inspection attack.
        empirical_audit: the canary audit.
        crafted_update_audit: the crafted-update audit of the mechanism.
        utility: utility and fairness.
    """

    schema_version: str
    generated_at: str
    fedpers_version: str
    run: RunInfo
    overall: Literal["pass", "fail"]
    verdicts: list[Verdict]
    guarantee: GuaranteeSection
    devices: DevicesSection
    secure_aggregation: SecureAggregationSection
    egress: EgressSection
    consent: ConsentSection
    update_inspection: UpdateInspectionSection
    empirical_audit: EmpiricalAuditSection
    crafted_update_audit: CraftedUpdateAuditSection
    utility: UtilitySection
