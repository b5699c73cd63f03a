"""``fedpers audit``: reports from real run directories, their schema, the verdicts and --check.

The run directories are built with the real pieces a simulation uses: device stores
(:func:`fedpers.simulation.federation.population.prepare_devices`), the run database
(:class:`fedpers.server.rundb.RunDB`), the federation configuration
(:class:`fedpers.server.config.FederationConfig`), the round mathematics
(:func:`fedpers.simulation.federation.fedsim.run_fedsim`), the accountant and checkpoints. The
coordinator's bookkeeping (participants, egress) is written as the strategy writes it:
accepted devices send their shared-parameter update and four scalar metrics; devices
without P10 are refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from fedpers.privacy.audit.schema import report_schema
from fedpers.privacy.dp.accounting import epsilon_for
from fedpers.server.checkpoint import Checkpoint, save_checkpoint
from fedpers.server.config import FederationConfig
from fedpers.server.rundb import EgressRecord, ParticipantRecord, RoundRecord, RunDB
from fedpers.simulation.audit.attacks import ATTACKS
from fedpers.simulation.audit.build import (
    AuditOptions,
    build_report,
    failed_verdicts,
    write_report,
)
from fedpers.simulation.audit.html import render_html
from fedpers.simulation.audit.replication import split_from_devices
from fedpers.simulation.cli.audit import audit_command
from fedpers.simulation.data.loader import load_dataset
from fedpers.simulation.data.synthetic import SyntheticConfig
from fedpers.simulation.evaluation.protocol import leave_one_out
from fedpers.simulation.federation.fedsim import FedSimConfig, run_fedsim
from fedpers.simulation.federation.population import prepare_devices

ROUNDS = 3
DIM = 8


def build_run_dir(
    root: Path,
    *,
    private: bool = True,
    budget: float = 8.0,
    doctor: str | None = None,
    erase: bool = False,
) -> Path:
    """A small, real run directory; ``doctor`` plants one defect for --check to find."""
    data = load_dataset("synthetic", synthetic=SyntheticConfig(n_users=60, n_items=80))
    split = leave_one_out(data)
    run_dir = root / "run"
    population = prepare_devices(run_dir, data, split, no_p10_fraction=0.1, workers=1)
    config = FederationConfig(
        run_dir=str(run_dir),
        devices_dir=str(population.devices_dir),
        rounds=ROUNDS,
        num_devices=split.n_users,
        n_items=split.n_items,
        dim=DIM,
        sample_rate=1.0,
        dp="user" if private else "none",
        target_epsilon=budget if private else None,
        clip_norm=0.5 if private else 0.0,
    ).resolve_privacy()
    sigma = config.noise_multiplier or 0.0
    delta = config.resolved_delta
    fed = FedSimConfig(
        rounds=ROUNDS,
        dim=DIM,
        clip_norm=config.clip_norm,
        noise_multiplier=sigma,
        sample_rate=1.0,
        eval_every=1,
    )
    result = run_fedsim(split, fed)
    refused = set(population.no_p10)
    consenting = [d for d in range(split.n_users) if d not in refused]
    with RunDB.open(run_dir) as db:
        db.write_config(config.to_dict())
        db.write_privacy(config.privacy_parameters())
        start = time.time()
        if erase:
            # device 1 is erased after round 1 and (wrongly, when doctored) takes part later
            start -= 100.0
        for entry in result.history:
            rnd = int(entry["round"])
            participants = [ParticipantRecord(d, "accepted", None, 0) for d in consenting]
            participants += [ParticipantRecord(d, "refused", "no_p10_consent", 0) for d in refused]
            if doctor == "consent" and rnd == 2:
                sneaky = min(refused)
                participants = [p for p in participants if p.device_id != sneaky]
                participants.append(ParticipantRecord(sneaky, "accepted", None, 0))
            egress = []
            for p in participants:
                if p.status != "accepted":
                    continue
                name = f"update.{p.device_id}"
                egress.append(
                    EgressRecord(
                        "train",
                        0,
                        p.device_id,
                        name,
                        "item_embedding",
                        "array",
                        (split.n_items, DIM),
                        "float32",
                        4 * split.n_items * DIM,
                    )
                )
                egress.append(
                    EgressRecord(
                        "train",
                        0,
                        p.device_id,
                        name,
                        "item_bias",
                        "array",
                        (split.n_items,),
                        "float32",
                        4 * split.n_items,
                    )
                )
                for metric in ("norm", "clipped", "n-examples", "loss"):
                    egress.append(
                        EgressRecord(
                            "train",
                            0,
                            p.device_id,
                            f"metrics.{p.device_id}",
                            metric,
                            "metric",
                            (),
                            "float",
                            8,
                        )
                    )
            if doctor == "egress" and rnd == 3:
                egress.append(
                    EgressRecord(
                        "train",
                        0,
                        5,
                        "update.5",
                        "user_vector",
                        "array",
                        (DIM,),
                        "float32",
                        4 * DIM,
                    )
                )
            epsilon = epsilon_for(sigma, 1.0, rnd, delta).epsilon if private else None
            if doctor == "epsilon" and epsilon is not None:
                epsilon *= 3.0
            metrics = {
                k: float(entry[k])
                for k in ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")
            }
            db.record_round(
                RoundRecord(
                    round=rnd,
                    status="completed",
                    sampled=split.n_users,
                    participants=len(consenting),
                    refused=len(refused),
                    noise_multiplier=sigma if private else None,
                    noise_std=sigma * config.clip_norm if private else None,
                    clip_norm=config.clip_norm if private else None,
                    sample_rate=1.0,
                    clipped_fraction=float(entry["clipped_fraction"]),
                    epsilon=epsilon,
                    delta=delta if private else None,
                    metrics=metrics,
                    wall_seconds=1.0,
                    started_at=start + 10.0 * rnd,
                ),
                participants,
                egress,
            )
        final_eps = epsilon_for(sigma, 1.0, ROUNDS, delta).epsilon if private else None
        if doctor == "epsilon" and final_eps is not None:
            final_eps *= 3.0
        db.write_privacy(
            {
                "epsilon": final_eps,
                "final_metrics": {
                    "hr10_sampled": result.metrics.hr10_sampled,
                    "ndcg10_sampled": result.metrics.ndcg10_sampled,
                    "hr10_full": result.metrics.hr10_full,
                    "ndcg10_full": result.metrics.ndcg10_full,
                },
            }
        )
    save_checkpoint(run_dir, Checkpoint(ROUNDS, result.global_arrays, {}))
    if erase:
        from fedpers.client.store import EventStore

        store_path = population.devices_dir / "device-0000001.db"
        with EventStore.open(store_path) as store:
            store.erase()
        if doctor == "erasure":
            with RunDB.open(run_dir) as db:
                db.record_round(
                    RoundRecord(
                        round=ROUNDS + 1,
                        status="skipped",
                        reason="doctored",
                        sampled=1,
                        participants=1,
                        started_at=time.time() + 5.0,
                    ),
                    [ParticipantRecord(1, "accepted", None, 0)],
                    [],
                )
    return run_dir


FAST = AuditOptions(skip_empirical=True)


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("private"))


@pytest.fixture(scope="module")
def private_report(private_run: Path) -> dict[str, Any]:
    json_path, html_path, report = write_report(private_run, AuditOptions(canaries=60))
    assert json_path.is_file() and html_path.is_file()
    return dict(report)


def _verdict(report: dict[str, Any], vid: str) -> dict[str, Any]:
    return next(v for v in report["verdicts"] if v["id"] == vid)


def test_report_validates_against_published_schema(
    private_run: Path, private_report: dict[str, Any]
) -> None:
    on_disk = json.loads((private_run / "report.json").read_text())
    schema = json.loads(
        (Path(__file__).resolve().parents[3] / "docs" / "report.schema.json").read_text()
    )
    jsonschema.validate(on_disk, schema)
    jsonschema.validate(on_disk, report_schema())
    assert on_disk["schema_version"].startswith("1.")


def test_private_run_passes_every_applicable_check(private_report: dict[str, Any]) -> None:
    assert private_report["overall"] == "pass", failed_verdicts(private_report)
    statuses = {v["id"]: v["status"] for v in private_report["verdicts"]}
    assert statuses["epsilon_within_budget"] == "pass"
    assert statuses["accountants_agree"] == "pass"
    assert statuses["egress_clean"] == "pass"
    assert statuses["consent_respected"] == "pass"
    assert statuses["erasures_honoured"] == "not_applicable"
    assert statuses["secure_aggregation_keys"] == "not_applicable"
    assert statuses["empirical_bound_below_claim"] == "pass"


def test_guarantee_section_comes_from_the_accountant(private_report: dict[str, Any]) -> None:
    g = private_report["guarantee"]
    assert g["private"] and g["unit_of_privacy"] == "user"
    assert g["epsilon"] == pytest.approx(
        epsilon_for(g["noise_multiplier"], 1.0, ROUNDS, g["delta"]).epsilon
    )
    assert g["epsilon"] <= g["epsilon_budget"] == 8.0
    assert [p["round"] for p in g["epsilon_by_round"]] == [1, 2, 3]
    assert g["cross_checks"][0]["accountant"].startswith("dp_accounting")
    assert g["cross_checks"][0]["relative_difference"] < 0.02
    assert g["sampling"]["rate"] == 1.0 and g["rounds"] == ROUNDS


def test_devices_consent_and_egress_sections(private_report: dict[str, Any]) -> None:
    d = private_report["devices"]
    assert d["num_devices"] == 60 and d["devices_participated"] == 54
    assert {"rounds_participated": ROUNDS, "devices": 54} in d["participation_histogram"]
    assert len(d["consent_refusals"]) == 6 * ROUNDS
    c = private_report["consent"]
    assert [r["consenting"] for r in c["rounds"]] == [54] * ROUNDS
    assert [r["participating"] for r in c["rounds"]] == [54] * ROUNDS
    assert c["non_consenting_participations"] == 0
    e = private_report["egress"]
    assert e["violations"] == [] and e["payload_entries"] == 54 * 6 * ROUNDS
    assert {x["name"] for x in e["catalogue"]} >= {"item_embedding", "item_bias", "norm"}
    assert all(x["allowed"] for x in e["catalogue"])


def test_attack_sections(private_report: dict[str, Any]) -> None:
    u = private_report["update_inspection"]
    assert u["status"] == "measured"
    plain = u["scenarios"][0]
    assert plain["name"] == "plain" and plain["auc"] > 0.9
    clipped = next(s for s in u["scenarios"] if s["name"] == "clipped")
    assert clipped["visible_to_coordinator"]
    e = private_report["empirical_audit"]
    assert e["status"] == "measured" and e["canaries"] == 60
    assert "audit run" in e["statement"] and "replicates" in e["statement"]
    assert e["one_run"]["epsilon"] <= private_report["guarantee"]["epsilon"]
    assert {a["name"] for a in e["attacks"]} == set(ATTACKS)
    assert e["configuration"]["noise_multiplier"] == private_report["guarantee"]["noise_multiplier"]
    # the audit's own federations train only on devices that consented (54 of 60)
    assert e["configuration"]["devices_with_data"] == 54
    ut = private_report["utility"]
    assert [p["round"] for p in ut["by_round"]] == [1, 2, 3]
    assert ut["final"]["hr10_sampled"] is not None
    assert ut["non_private_reference"]["status"] == "computed"


def test_crafted_update_audit_section(private_run: Path, private_report: dict[str, Any]) -> None:
    c = private_report["crafted_update_audit"]
    g = private_report["guarantee"]
    assert c["status"] == "measured"
    assert c["noise_multiplier"] == g["noise_multiplier"] and c["delta"] == g["delta"]
    assert c["rounds"] == 3
    one, every = c["variants"]
    assert [one["name"], every["name"]] == ["one round", "all rounds"]
    assert every["accountant_epsilon"] == g["epsilon"]
    for v in c["variants"]:
        assert v["clopper_pearson_epsilon"] <= v["accountant_epsilon"]
        assert v["one_run_epsilon"] <= v["accountant_epsilon"]
    # the strongest attack beats the black-box canary audit on the published models
    assert (
        every["clopper_pearson_epsilon"] >= private_report["empirical_audit"]["one_run"]["epsilon"]
    )
    e = private_report["empirical_audit"]["statement"]
    assert "Why this bound is far below the claim" in e and "section 8" in e
    html = (private_run / "report.html").read_text()
    assert "8. Crafted-update audit of the mechanism" in html and "9. Utility" in html


def test_html_is_self_contained(private_run: Path, private_report: dict[str, Any]) -> None:
    html = (private_run / "report.html").read_text()
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html
    assert "@import" not in html and "url(" not in html
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "Privacy audit report" in html and "Verdicts" in html
    # plain-language verdicts come before the detail
    assert html.index("Verdicts") < html.index("1. Privacy guarantee")


@pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("CI"),
    reason="headless Chromium not installed (.ci/run installs it; under CI this test never skips)",
)
def test_html_renders_in_headless_chromium_offline(
    private_run: Path, private_report: dict[str, Any], tmp_path: Path
) -> None:
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                f"--user-data-dir={profile}",
                # any attempt to reach the network fails to resolve
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--window-size=1200,2000",
                f"--screenshot={shot}",
                (private_run / "report.html").resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    assert shot.is_file() and shot.stat().st_size > 20_000


@pytest.mark.parametrize(
    ("doctor", "failing"),
    [
        ("epsilon", {"epsilon_within_budget", "accountants_agree"}),
        ("egress", {"egress_clean"}),
        ("consent", {"consent_respected"}),
    ],
)
def test_check_fails_on_doctored_runs(tmp_path: Path, doctor: str, failing: set[str]) -> None:
    run_dir = build_run_dir(tmp_path, doctor=doctor)
    report = build_report(run_dir, FAST)
    assert {v["id"] for v in failed_verdicts(report)} == failing
    result = CliRunner().invoke(audit_command, [str(run_dir), "--check", "--skip-empirical"])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output


def test_check_passes_and_json_output(private_run: Path, private_report: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        audit_command, [str(private_run), "--check", "--skip-empirical", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["overall"] == "pass"
    assert Path(payload["report_json"]).is_file() and Path(payload["report_html"]).is_file()
    assert payload["epsilon"] == pytest.approx(
        json.loads(Path(payload["report_json"]).read_text())["guarantee"]["epsilon"]
    )


def test_non_private_run_is_labelled_and_never_given_an_epsilon(tmp_path: Path) -> None:
    run_dir = build_run_dir(tmp_path, private=False)
    report = build_report(run_dir, FAST)
    g = report["guarantee"]
    assert not g["private"] and g["epsilon"] is None and g["unit_of_privacy"] == "none"
    assert _verdict(dict(report), "epsilon_within_budget")["status"] == "not_applicable"
    assert report["overall"] == "pass"
    html = render_html(report)
    assert "NOT differentially private" in html


def test_erasure_honoured_and_violated(tmp_path: Path) -> None:
    run_dir = build_run_dir(tmp_path, erase=True)
    report = build_report(run_dir, FAST)
    erasures = report["consent"]["erasures"]
    assert [e["device_id"] for e in erasures] == [1]
    # the store was erased after every recorded round: it never took part afterwards
    assert erasures[0]["rounds_after_erasure"] == []
    assert _verdict(dict(report), "erasures_honoured")["status"] == "pass"


def test_erasure_violation_fails(tmp_path: Path) -> None:
    run_dir = build_run_dir(tmp_path, erase=True, doctor="erasure")
    report = build_report(run_dir, FAST)
    assert report["consent"]["erasures"][0]["rounds_after_erasure"] == [ROUNDS + 1]
    failing = {v["id"] for v in failed_verdicts(report)}
    assert {"erasures_honoured", "consent_respected"} <= failing


def test_split_is_rebuilt_from_the_devices_folder(private_run: Path) -> None:
    split, _features = split_from_devices(private_run / "devices")
    data = load_dataset("synthetic", synthetic=SyntheticConfig(n_users=60, n_items=80))
    original = leave_one_out(data)
    assert split.n_users == original.n_users and split.n_items == original.n_items
    assert np.array_equal(split.test_items, original.test_items)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(split.train_by_user, original.train_by_user, strict=True)
    )


def test_run_without_device_data_still_gets_a_report(tmp_path: Path) -> None:
    run_dir = build_run_dir(tmp_path)
    shutil.rmtree(run_dir / "devices")
    report = build_report(run_dir, AuditOptions(canaries=20))
    jsonschema.validate(json.loads(json.dumps(report)), report_schema())
    assert report["update_inspection"]["status"] == "skipped"
    assert report["empirical_audit"]["status"] == "skipped"
    assert report["crafted_update_audit"]["status"] == "measured"  # needs no device data
    assert report["consent"]["rounds"][0]["consenting"] is None
    statuses = {v["id"]: v["status"] for v in report["verdicts"]}
    assert statuses["consent_respected"] == "not_applicable"
    assert statuses["egress_clean"] == "pass" and statuses["accountants_agree"] == "pass"
    assert report["devices"]["record_level_epsilon"] is None
