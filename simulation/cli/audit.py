"""``fedpers audit RUN_DIR``: write a run's privacy audit report and check its verdicts.

Register on the main application with ``app.command("audit")(audit)``;
:data:`audit_command` is the same command as a stand-alone Typer application.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fedpers.simulation.cli.progress import StepProgress

if TYPE_CHECKING:
    from fedpers.privacy.audit.report import AuditReport

__all__ = ["audit", "audit_command", "summary_of"]

_MARK = {"pass": "PASS", "fail": "FAIL", "not_applicable": "n/a "}


def summary_of(report: AuditReport, json_path: Path, html_path: Path) -> dict[str, Any]:
    """The one JSON object ``fedpers audit --json`` prints."""
    g = report["guarantee"]
    e = report["empirical_audit"]
    inspection = report["update_inspection"]["scenarios"]
    return {
        "report_json": str(json_path),
        "report_html": str(html_path),
        "schema_version": report["schema_version"],
        "overall": report["overall"],
        "verdicts": {v["id"]: v["status"] for v in report["verdicts"]},
        "private": g["private"],
        "epsilon": g["epsilon"],
        "delta": g["delta"],
        "epsilon_budget": g["epsilon_budget"],
        "noise_multiplier": g["noise_multiplier"],
        "cross_checks": {c["accountant"]: c["epsilon"] for c in g["cross_checks"]},
        "egress_violations": len(report["egress"]["violations"]),
        "non_consenting_participations": report["consent"]["non_consenting_participations"],
        "update_inspection_auc": {s["name"]: s["auc"] for s in inspection},
        "empirical_status": e["status"],
        "empirical_epsilon_lower_bound": e["one_run"]["epsilon"] if e["one_run"] else None,
        "empirical_epsilon_clopper_pearson": (
            e["clopper_pearson"]["epsilon"] if e["clopper_pearson"] else None
        ),
        "canary_attack_auc": {a["name"]: a["auc"] for a in e["attacks"]},
        **{k: v for k, v in report["utility"]["final"].items()},
    }


@contextmanager
def _federation_progress(console: Console, banner: str = "") -> Iterator[None]:
    """A progress bar with time left for each federation the audit runs in-process.

    ``banner`` is printed when the first federation starts (an audit that fails before
    it prints only its error).
    """
    from fedpers.simulation.federation.round_observers import observe_rounds

    state: dict[str, Any] = {"count": 0, "bar": None}

    def on_event(rounds: int, entry: dict[str, Any] | None) -> None:
        if entry is None:  # a federation starts
            if state["bar"] is not None:
                state["bar"].close()
            if state["count"] == 0 and banner:
                console.print(banner, highlight=False, markup=False, soft_wrap=True)
            state["count"] += 1
            state["bar"] = StepProgress(console, f"audit federation {state['count']}, round")
            state["bar"].start(rounds, "training")
            return
        parts = [f"{entry.get('participants', 0)} devices"]
        if entry.get("hr10_sampled") is not None:
            parts.append(f"hr10_sampled {entry['hr10_sampled']:.4f}")
        state["bar"].update(int(entry["round"]), ", ".join(parts))

    failed = False
    try:
        with observe_rounds(on_event):
            yield
    except BaseException:
        failed = True
        raise
    finally:
        if state["bar"] is not None:
            state["bar"].close(failed=failed)


def audit(
    run_dir: Annotated[
        Path,
        typer.Argument(help="The run directory to audit (holds run.db).", show_default=False),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Exit with status 1 when any verdict fails (epsilon over budget, "
            "accountants disagree, egress violation, non-consenting participant, erasure "
            "not honoured, coordinator held a secret key, empirical bound above the claim).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
    ] = False,
    canaries: Annotated[
        int,
        typer.Option(
            "--canaries",
            min=4,
            help="Canary devices of the empirical audit (each included with probability 1/2).",
        ),
    ] = 500,
    skip_empirical: Annotated[
        bool,
        typer.Option(
            "--skip-empirical",
            help="Skip the canary audit and the non-private reference (two extra federations).",
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the audit's own draws.")] = 0,
) -> None:
    """Write RUN_DIR/report.json and RUN_DIR/report.html and print their paths.

    The report states the privacy guarantee and checks it: accountants cross-checked,
    devices and consent, secure aggregation, the catalogue of everything devices sent,
    an update-inspection attack, an empirical audit with canary devices (a separate
    federation replicating the run's privacy configuration) and utility per user group.

    Examples:
        fedpers audit runs/ml100k-eps8 --check
        fedpers audit runs/ml100k-eps8 --skip-empirical --json
    """
    import torch  # the audit's federations: only when the command runs

    from fedpers.simulation.audit.build import AuditOptions, failed_verdicts, write_report

    # one intra-op thread: reproducible float sums (the same audit gives the same figures)
    # and no oversubscription of small machines
    torch.set_num_threads(1)
    banner = (
        f"auditing {run_dir}: up to two extra federations, the canary audit ({canaries} "
        "canary devices) and the non-private reference (--skip-empirical to skip both)"
    )
    options = AuditOptions(canaries=canaries, skip_empirical=skip_empirical, seed=seed)
    with _federation_progress(Console(stderr=True), banner):
        json_path, html_path, report = write_report(run_dir, options)
    for v in report["verdicts"]:
        typer.echo(f"{_MARK[v['status']]}  {v['title']}: {v['summary']}", err=True)
    if as_json:
        typer.echo(json.dumps(summary_of(report, json_path, html_path), allow_nan=False))
    else:
        typer.echo(str(json_path))
        typer.echo(str(html_path))
    if check and failed_verdicts(report):
        typer.echo(f"audit --check: {len(failed_verdicts(report))} verdict(s) failed", err=True)
        sys.exit(1)


audit_command = typer.Typer(
    help="Write and check a run's privacy audit report.", add_completion=False
)
audit_command.command(name="audit")(audit)
