"""``fedpers runs``: the runs in a folder and the per-round log of one run.

Register with ``app.add_typer(runs_app, name="runs")`` on the root typer app. Both
commands only read (see :mod:`fedpers.simulation.run_index`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from fedpers.simulation.run_index import list_runs, read_round_log, summarize_run

__all__ = ["LOG_COLUMNS", "runs_app"]

runs_app = typer.Typer(
    help=(
        "List run directories with their status, epsilon and accuracy, and show the "
        "per-round log of one run (its metrics.jsonl).\n\n"
        "  $ fedpers runs list\n"
        "  $ fedpers runs log runs/ml100k-eps8-20260101-120000"
    ),
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]

LOG_COLUMNS = (
    "round",
    "status",
    "participants",
    "dropped",
    "loss",
    "epsilon",
    "clipped_fraction",
    "hr10_sampled",
    "ndcg10_sampled",
    "wall_seconds",
)
"""The columns of ``fedpers runs log`` (every field is in its ``--json`` rows)."""


def _console() -> Console:
    """stdout; a pipe or file gets wide lines instead of rich's 80 columns."""
    console = Console()
    if not console.is_terminal:
        console.width = 200
    return console


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@runs_app.command("list")
def list_command(
    root: Annotated[
        Path, typer.Option("--root", help="The folder that holds run directories.")
    ] = Path("runs"),
    as_json: JsonOpt = False,
) -> None:
    """List the run directories under ROOT, oldest first.

    Status is complete (every round ran and the final model was scored), stopped (ended
    early, e.g. at the privacy budget), incomplete (rounds missing: running, or crashed;
    resumable with `fedpers simulate --resume RUN_DIR` when a checkpoint exists) or
    prepared (configured, no round yet). Accuracy is the final test figure, else the
    latest evaluated round's. Nothing is written.

    Examples:
      $ fedpers runs list
      $ fedpers runs list --root /data/runs --json
    """
    runs = list_runs(root)
    if as_json:
        typer.echo(json.dumps({"root": str(root), "runs": [r.to_dict() for r in runs]}))
        return
    table = Table(
        title=f"runs in {root}",
        caption=None if runs else "no run directories",
        box=box.SIMPLE_HEAD,
    )
    for column in ("run", "status", "rounds", "dp", "epsilon", "hr10_sampled", "ndcg10_sampled"):
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    table.add_column("created (UTC)")
    table.add_column("audited")
    for r in runs:
        table.add_row(
            Path(r.run_dir).name if Path(r.run_dir) != root else str(root),
            r.status + (" (resumable)" if r.status == "incomplete" and r.resumable else ""),
            f"{r.rounds_done}/{_fmt(r.rounds)}",
            _fmt(r.dp),
            _fmt(r.epsilon) if r.dp in ("user", "both") else "non-private",
            _fmt(r.hr10_sampled),
            _fmt(r.ndcg10_sampled),
            (r.created or "-").replace("+00:00", "").replace("T", " "),
            _fmt(r.audited),
        )
    _console().print(table)


@runs_app.command("log")
def log_command(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Show a run's per-round log (RUN_DIR/metrics.jsonl) as a table.

    One row per round: its status, how many devices took part or dropped, the training
    loss, epsilon spent so far, the fraction of updates clipped, evaluation figures
    (rounds with --eval-every) and the round's wall time. --json prints every field.

    Examples:
      $ fedpers runs log runs/eps8
      $ fedpers runs log runs/eps8 --json
    """
    rows = read_round_log(run_dir)
    summary = summarize_run(run_dir)
    if as_json:
        typer.echo(json.dumps({"run": summary.to_dict(), "rounds": rows}))
        return
    table = Table(
        title=f"{run_dir}: {summary.status}, {summary.rounds_done}/{_fmt(summary.rounds)} rounds",
        caption=None if rows else "no round recorded yet",
        box=box.SIMPLE_HEAD,
    )
    for column in LOG_COLUMNS:
        table.add_column(column, justify="left" if column == "status" else "right")
    for row in rows:
        table.add_row(*(_fmt(row.get(column)) for column in LOG_COLUMNS))
    _console().print(table)
