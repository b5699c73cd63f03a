"""``fedpers audit``: turn a run directory into ``report.json`` and ``report.html``.

:func:`build_report` reads the run (read-only, :mod:`.sources`), builds the
sections from what the run recorded (:mod:`.sections`), runs the two attacks
(:mod:`.attacks`: update inspection on one device's update, and unless skipped the
canary audit, a separate federation replicating the run's privacy configuration on its
data, :mod:`.replication`), and
states one plain-language verdict per check. :func:`write_report` writes the JSON
(validated against :func:`fedpers.privacy.audit.schema.report_schema`) and the
self-contained HTML (:mod:`.html`).

Verdicts (``fedpers audit --check`` fails when any is ``fail``): epsilon within budget,
independent accountants agree within 2%, no egress violation, no participant without
consent, erasures honoured, the coordinator held no secret key (secure aggregation), the
empirical lower bound at most the claimed epsilon.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import jsonschema
import numpy as np

from fedpers.client.device_round import initial_user_vector, initial_user_vectors
from fedpers.client.model import ItemSide, ModelConfig, shared_arrays
from fedpers.client.training.global_parameters import GlobalParameters
from fedpers.client.training.local import LocalTrainConfig
from fedpers.privacy.audit.report import (
    SCHEMA_VERSION,
    AuditReport,
    CraftedUpdateAuditSection,
    EmpiricalAuditSection,
    GroupGap,
    GroupMetrics,
    GuaranteeSection,
    NonPrivateReference,
    RunInfo,
    UpdateInspectionSection,
    UtilitySection,
    Verdict,
)
from fedpers.privacy.audit.schema import report_schema
from fedpers.privacy.dp.accounting import epsilon_for
from fedpers.privacy.dp.noise import noise_share_std
from fedpers.privacy.errors import ConfigError, DataError, PrivacyAccountingError
from fedpers.server.run_dir import RunDirectory
from fedpers.simulation.audit.attacks import (
    CanaryAuditConfig,
    inspect_update,
    pick_inspection_device,
    run_canary_audit,
)
from fedpers.simulation.audit.crafted import CraftedAuditConfig, run_crafted_audit
from fedpers.simulation.audit.html import render_html
from fedpers.simulation.audit.replication import (
    consenting_devices,
    fedsim_config_from_run,
    identify_dataset,
    restrict_split,
    split_from_devices,
)
from fedpers.simulation.audit.sections import (
    accountants_verdict,
    budget_verdict,
    consent_section,
    consent_verdict,
    devices_section,
    egress_section,
    egress_verdict,
    erasure_verdict,
    guarantee_section,
    secure_aggregation_section,
    secure_aggregation_verdict,
    utility_points,
    verdict_of,
)
from fedpers.simulation.audit.sources import RunSources, finite_or_none, read_run
from fedpers.simulation.evaluation.protocol import (
    METRIC_NAMES,
    LeaveOneOutSplit,
    RankingMetrics,
    evaluate_by_group,
    fairness_gaps,
    user_groups,
)
from fedpers.simulation.federation.fedsim import (
    FedSimConfig,
    device_histories,
    federation,
    fine_tuned_scorer,
    run_fedsim,
)

__all__ = [
    "AuditOptions",
    "build_report",
    "failed_verdicts",
    "validate_report",
    "write_report",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditOptions:
    """How thorough an audit is.

    Attributes:
        canaries: canary devices of the empirical audit.
        items_per_canary: dedicated items per canary.
        skip_empirical: skip the canary audit and the non-private reference (the two
            extra federations); every other section is still built.
        seed: seed of the audit's own randomness (canary inclusion, attacks).
        confidence: confidence of the empirical lower bounds.
        groups: user attributes for the fairness table.
    """

    canaries: int = 500
    items_per_canary: int = 4
    skip_empirical: bool = False
    seed: int = 0
    confidence: float = 0.95
    groups: tuple[str, ...] = field(default=("gender", "age_band"))


# -- report assembly ---------------------------------------------------------------------------


def _run_info(src: RunSources, private: bool) -> RunInfo:
    completed = sum(1 for r in src.rounds if r.get("status") == "completed")
    label = str(src.privacy.get("label") or ("private" if private else "non-private"))
    return RunInfo(
        run_dir=str(src.run_dir),
        dataset=src.config.get("dataset"),
        num_devices=(
            int(src.config["num_devices"]) if src.config.get("num_devices") is not None else None
        ),
        rounds_completed=completed,
        rounds_recorded=len(src.rounds),
        private=private,
        label=label,
        config=dict(src.config),
    )


def _inspection(
    src: RunSources,
    split: LeaveOneOutSplit | None,
    features: np.ndarray | None,
    final_clip: float,
    sigma: float,
) -> UpdateInspectionSection:
    secure = str(src.privacy.get("secure_aggregation") or "none") not in ("none", "")
    if split is None:
        return UpdateInspectionSection(
            status="skipped",
            device_id=None,
            n_items=None,
            n_true=None,
            scenarios=[],
            statement=(
                "Skipped: the run's device data is not available on this machine."
                + (
                    " With secure aggregation the coordinator holds no individual update."
                    if secure
                    else ""
                )
            ),
        )
    cfg = src.config
    dim = int(cfg.get("dim") or 32)
    n_features = int(cfg.get("n_item_features") or 0)
    model_config = ModelConfig(
        n_items=split.n_items,
        dim=dim,
        n_item_features=n_features,
        init_std=float(cfg.get("init_std") or 0.1),
    )
    feats = features if n_features else None
    arrays = src.final_arrays
    if arrays is None:
        arrays = shared_arrays(
            ItemSide(model_config, item_features=feats, seed=int(cfg.get("seed") or 0))
        )
    device = pick_inspection_device(split)
    record = src.devices.get(device)
    seed = int(cfg.get("seed") or 0)
    vector = (
        record.user_vector
        if record is not None
        and record.user_vector is not None
        and record.user_vector.shape == (dim,)
        else initial_user_vector(seed, device, dim)
    )
    expected = finite_or_none(src.privacy.get("expected_cohort")) or float(split.n_users)
    share = (
        noise_share_std(sigma, final_clip, expected)
        if secure and sigma > 0 and final_clip > 0
        else 0.0
    )
    return inspect_update(
        device_histories(split, "test")[device],
        model_config,
        [np.asarray(a, dtype=np.float32) for a in arrays],
        LocalTrainConfig.from_dict(dict(cfg.get("local") or {})),
        device_id=device,
        user_vector=vector,
        seed=seed,
        server_round=(src.final_round or 0) + 1,
        clip_norm=final_clip,
        noise_multiplier=sigma,
        noise_share_std=share,
        secure_aggregation=secure,
        item_features=feats,
    )


def _audit_epsilon(fed: FedSimConfig, n_devices: int, delta: float) -> float | None:
    if fed.noise_multiplier <= 0:
        return None
    try:
        if fed.clients_per_round is not None:
            result = epsilon_for(
                fed.noise_multiplier,
                None,
                fed.rounds,
                delta,
                sampling="fixed",
                population=n_devices,
                cohort=fed.clients_per_round,
            )
        else:
            result = epsilon_for(fed.noise_multiplier, fed.sample_rate, fed.rounds, delta)
    except (PrivacyAccountingError, ConfigError):
        return None
    return result.epsilon if result.private and math.isfinite(result.epsilon) else None


def _empirical(
    src: RunSources,
    split: LeaveOneOutSplit | None,
    features: np.ndarray | None,
    options: AuditOptions,
    claimed: float | None,
    delta: float | None,
) -> EmpiricalAuditSection:
    def skipped(status: str, why: str) -> EmpiricalAuditSection:
        return EmpiricalAuditSection(
            status=status,  # type: ignore[typeddict-item]
            statement=why,
            configuration={},
            audit_run_epsilon=None,
            canaries=0,
            canaries_included=0,
            items_per_canary=0,
            attacks=[],
            one_run=None,
            clopper_pearson=None,
            claimed_epsilon=claimed,
            seconds=None,
        )

    if options.skip_empirical:
        return skipped("skipped", "Skipped on request (--skip-empirical): no canary audit was run.")
    if split is None:
        return skipped(
            "skipped", "Skipped: the run's device data is not available on this machine."
        )
    accounted = sum(1 for r in src.rounds if r.get("status") == "completed")
    fed, notes = fedsim_config_from_run(src.config, src.privacy, accounted)
    audit_delta = delta if delta is not None else 0.1 / max(1, split.n_users)
    audit = CanaryAuditConfig(
        canaries=options.canaries,
        items_per_canary=options.items_per_canary,
        seed=options.seed,
        confidence=options.confidence,
    )
    n_after = split.n_users + options.canaries
    return run_canary_audit(
        split,
        fed,
        audit,
        delta=audit_delta,
        claimed_epsilon=claimed,
        audit_run_epsilon=_audit_epsilon(fed, n_after, audit_delta),
        item_features=features,
        extra_configuration={
            "devices_with_data": int((np.diff(split.train_indptr) > 0).sum()),
            **({"replication_notes": notes} if notes else {}),
        },
    )


def _crafted(
    src: RunSources, options: AuditOptions, guarantee: GuaranteeSection, final_clip: float
) -> CraftedUpdateAuditSection:
    """The crafted-update audit of the run's mechanism (section 8)."""
    accounted = sum(1 for r in src.rounds if r.get("status") == "completed")
    fed, _ = fedsim_config_from_run(src.config, src.privacy, accounted)
    population = int(src.config.get("num_devices") or 0) or 1
    if fed.clients_per_round is not None:
        cohort = float(fed.clients_per_round)
        rate = min(1.0, cohort / population)
    else:
        rate = fed.sample_rate if fed.sample_rate is not None else 1.0
        cohort = max(1.0, rate * population)
    delta = guarantee["delta"] if guarantee["delta"] is not None else 0.1 / population
    audited = guarantee["private"] and not options.skip_empirical
    section = run_crafted_audit(
        # without noise the audit returns at once: that is what skipping it records
        noise_multiplier=(guarantee["noise_multiplier"] or 0.0) if audited else 0.0,
        clip_norm=final_clip,
        expected_cohort=cohort,
        sample_rate=rate,
        rounds=accounted,
        delta=delta,
        claimed_epsilon=guarantee["epsilon"],
        config=CraftedAuditConfig(seed=options.seed, confidence=options.confidence),
    )
    if options.skip_empirical:
        section["status"] = "skipped"
        section["statement"] = "Skipped on request (--skip-empirical)."
    return section


def _metrics_dict(m: RankingMetrics | dict[str, Any] | None) -> dict[str, float | None]:
    if m is None:
        return dict.fromkeys(METRIC_NAMES)
    if isinstance(m, RankingMetrics):
        return {k: finite_or_none(getattr(m, k)) for k in METRIC_NAMES}
    return {k: finite_or_none(m.get(k)) for k in METRIC_NAMES}


def _group_rows(
    by_group: dict[str, dict[str, RankingMetrics]],
) -> tuple[list[GroupMetrics], list[GroupGap]]:
    rows: list[GroupMetrics] = []
    gaps: list[GroupGap] = []
    for attribute, per_label in by_group.items():
        for label, m in per_label.items():
            rows.append(
                GroupMetrics(
                    attribute=attribute,
                    group=label,
                    users=int(m.n_users),
                    hr10_sampled=finite_or_none(m.hr10_sampled),
                    ndcg10_sampled=finite_or_none(m.ndcg10_sampled),
                    hr10_full=finite_or_none(m.hr10_full),
                    ndcg10_full=finite_or_none(m.ndcg10_full),
                )
            )
        for metric, gap in fairness_gaps({attribute: per_label}).get(attribute, {}).items():
            values = {label: getattr(m, metric) for label, m in per_label.items()}
            gaps.append(
                GroupGap(
                    attribute=attribute,
                    metric=metric,  # type: ignore[typeddict-item]
                    best_group=max(values, key=lambda k: values[k]),
                    worst_group=min(values, key=lambda k: values[k]),
                    gap=float(gap),
                )
            )
    return rows, gaps


def _utility(
    src: RunSources,
    split: LeaveOneOutSplit | None,
    features: np.ndarray | None,
    options: AuditOptions,
) -> UtilitySection:
    points = utility_points(src.rounds)
    recorded = src.privacy.get("final_metrics")
    final = _metrics_dict(recorded if isinstance(recorded, dict) else None)
    if all(v is None for v in final.values()) and points:
        last = points[-1]
        final = {k: last[k] for k in METRIC_NAMES}  # type: ignore[literal-required]
    section = UtilitySection(
        by_round=points,
        final=final,
        groups=[],
        gaps=[],
        group_source="No per-group figures: the run's device data is not available here.",
        non_private_reference=NonPrivateReference(
            status="unavailable",
            source="the run directory holds no non-private reference",
            metrics=dict.fromkeys(METRIC_NAMES),
        ),
    )
    if split is None or src.devices_dir is None:
        return section
    cfg = src.config
    seed = int(cfg.get("seed") or 0)
    dim = int(cfg.get("dim") or 32)
    data, how = identify_dataset(split, src.devices_dir)
    labels = user_groups(data, [*options.groups]) if data is not None else {}
    feats = features if int(cfg.get("n_item_features") or 0) else None
    model_config = ModelConfig(
        n_items=split.n_items, dim=dim, n_item_features=0 if feats is None else feats.shape[1]
    )
    local = LocalTrainConfig.from_dict(dict(cfg.get("eval_local") or cfg.get("local") or {}))
    if labels and src.final_arrays is not None:
        vectors = initial_user_vectors(seed, list(range(split.n_users)), dim)
        for device, rec in src.devices.items():
            if (
                rec.user_vector is not None
                and rec.user_vector.shape == (dim,)
                and device < split.n_users
            ):
                vectors[device] = rec.user_vector
        scorer = fine_tuned_scorer(
            GlobalParameters(
                [np.asarray(a, dtype=np.float32) for a in src.final_arrays], model_config, feats
            ),
            federation(device_histories(split, "test"), vectors),
            local,
            seed,
            src.final_round or 0,
        )
        section["groups"], section["gaps"] = _group_rows(evaluate_by_group(scorer, split, labels))
        section["group_source"] = (
            f"Final model plus local fine-tuning on each device, test items, grouped by {how}."
        )
    elif not labels:
        section["group_source"] = f"No per-group figures: {how}."
    private = bool(src.privacy.get("user_level"))
    if private and not options.skip_empirical:
        accounted = sum(1 for r in src.rounds if r.get("status") == "completed")
        fed, _ = fedsim_config_from_run(cfg, {**src.privacy, "user_level": False}, accounted)
        result = run_fedsim(split, fed, item_features=feats)
        section["non_private_reference"] = NonPrivateReference(
            status="computed",
            source=(
                "computed by the auditor: the same configuration without clipping or noise, "
                f"{fed.rounds} rounds in process (fedsim_core), test items"
            ),
            metrics=_metrics_dict(result.metrics),
        )
        if labels:
            scorer = fine_tuned_scorer(
                GlobalParameters(result.global_arrays, model_config, feats),
                federation(device_histories(split, "test"), result.user_vectors),
                fed.eval_local or fed.local,
                fed.seed,
                fed.rounds,
            )
            ref_rows, _ = _group_rows(evaluate_by_group(scorer, split, labels))
            section["groups"].extend(
                GroupMetrics(**{**row, "attribute": f"{row['attribute']} (non-private)"})  # type: ignore[typeddict-item]
                for row in ref_rows
            )
    elif not private:
        section["non_private_reference"] = NonPrivateReference(
            status="from_run_dir",
            source="this run is itself non-private",
            metrics=dict(final),
        )
    return section


def _empirical_verdict(e: EmpiricalAuditSection, private: bool) -> Verdict:
    verdict = verdict_of(
        "empirical_bound_below_claim", "Empirical lower bound does not exceed the claim"
    )
    if e["status"] != "measured" or e["one_run"] is None:
        return verdict("not_applicable", f"No canary audit was run ({e['status']}).")
    bound = e["one_run"]["epsilon"]
    if not private or e["claimed_epsilon"] is None:
        return verdict(
            "not_applicable",
            f"The run claims no epsilon; the canary attack measured an empirical lower "
            f"bound of {bound:.3f} (what an attacker provably learns at 95% confidence).",
        )
    claimed = e["claimed_epsilon"]
    ok = bound <= claimed
    return verdict(
        "pass" if ok else "fail",
        f"Empirical lower bound {bound:.3f} at {e['one_run']['confidence']:.0%} confidence "
        f"{'<=' if ok else '>'} claimed epsilon {claimed:.3f}"
        + ("." if ok else ": the implementation leaks more than it claims (a bug)."),
    )


def _version() -> str:
    try:
        return metadata.version("fedpers")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_report(run_dir: str | Path, options: AuditOptions | None = None) -> AuditReport:
    """Audit a run directory.

    Args:
        run_dir: the run directory (``run.db``, ``config.json``, checkpoint, devices).
        options: how thorough the audit is.

    Returns:
        The report (see :mod:`fedpers.privacy.audit.report`).

    Raises:
        StoreError: when ``run_dir`` is not a run directory or a run file cannot be read.
        DataError: when ``config.json`` is not a JSON object.
    """
    options = options or AuditOptions()
    src = read_run(run_dir)
    guarantee = guarantee_section(src)
    private = guarantee["private"]
    split: LeaveOneOutSplit | None = None
    features: np.ndarray | None = None
    if src.devices_dir is not None:
        try:
            split, features = split_from_devices(src.devices_dir)
            split = restrict_split(split, consenting_devices(src.devices_dir, src))
        except DataError as exc:
            logger.warning("no data split for the attacks: %s", exc)
    secure = str(src.privacy.get("secure_aggregation") or "none") not in ("none", "")
    with src.rundb() as db:
        egress = egress_section(db.egress(), src.config, secure)
    devices = devices_section(src)
    secagg = secure_aggregation_section(src)
    consent = consent_section(src)
    sigma = guarantee["noise_multiplier"] or 0.0
    final_clip = (
        finite_or_none(src.privacy.get("final_clip_norm"))
        or guarantee["clipping"]["final_norm"]
        or 0.0
    )
    inspection = _inspection(src, split, features, final_clip if private else 0.0, sigma)
    empirical = _empirical(src, split, features, options, guarantee["epsilon"], guarantee["delta"])
    crafted = _crafted(src, options, guarantee, final_clip if private else 0.0)
    utility = _utility(src, split, features, options)
    verdicts = [
        budget_verdict(guarantee),
        accountants_verdict(guarantee),
        egress_verdict(egress),
        consent_verdict(consent),
        erasure_verdict(consent),
        secure_aggregation_verdict(secagg),
        _empirical_verdict(empirical, private),
    ]
    overall: Literal["pass", "fail"] = (
        "fail" if any(v["status"] == "fail" for v in verdicts) else "pass"
    )
    return AuditReport(
        schema_version=SCHEMA_VERSION,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fedpers_version=_version(),
        run=_run_info(src, private),
        overall=overall,
        verdicts=verdicts,
        guarantee=guarantee,
        devices=devices,
        secure_aggregation=secagg,
        egress=egress,
        consent=consent,
        update_inspection=inspection,
        empirical_audit=empirical,
        crafted_update_audit=crafted,
        utility=utility,
    )


def validate_report(report: AuditReport | dict[str, Any]) -> None:
    """Check a report against the published JSON Schema (and that it is strict JSON).

    Raises:
        DataError: when it does not validate; the message names the first problem.
    """
    try:
        text = json.dumps(report, allow_nan=False)
    except ValueError as exc:
        raise DataError(f"report is not strict JSON: {exc}") from exc
    try:
        jsonschema.validate(json.loads(text), report_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise DataError(
            f"report does not match its schema at {where or '/'}: {exc.message}"
        ) from exc


def failed_verdicts(report: AuditReport | dict[str, Any]) -> list[Verdict]:
    """The verdicts of ``report`` that failed."""
    return [v for v in report["verdicts"] if v["status"] == "fail"]


def write_report(
    run_dir: str | Path, options: AuditOptions | None = None
) -> tuple[Path, Path, AuditReport]:
    """Build, validate and write ``report.json`` and ``report.html`` into the run directory.

    Returns:
        ``(json path, html path, report)``.

    Raises:
        StoreError: when the run directory is not one.
        DataError: when the report fails its schema.
    """
    run = RunDirectory(Path(run_dir))
    report = build_report(run.root, options)
    validate_report(report)
    json_path, html_path = run.report_json, run.report_html
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path, report
