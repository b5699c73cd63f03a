"""``fedpers simulate``: run a federation on Flower's simulation engine.

Register with ``app.command("simulate")(simulate_command)`` on the root typer app.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedpers.privacy.errors import ConfigError
from fedpers.simulation.cli.options import FederationOptions, Json, with_federation_options
from fedpers.simulation.cli.progress import StepProgress

if TYPE_CHECKING:
    from fedpers.server.config import FederationConfig

__all__ = ["main", "simulate_command"]

_METRICS = ("hr10_sampled", "ndcg10_sampled", "hr10_full", "ndcg10_full")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _final_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"fedpers simulate: {result['run_dir']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in _METRICS:
        table.add_row(key, _fmt(result.get(key)))
    if result.get("epsilon") is None:
        table.add_row("privacy", "NON-PRIVATE (no user-level noise; no epsilon)")
    else:
        table.add_row("epsilon", f"{result['epsilon']:.4g} (delta {result['delta']:.3g})")
        table.add_row("noise multiplier", _fmt(result["noise_multiplier"]))
        table.add_row("clip norm", _fmt(result["clip_norm"]))
    if result.get("record_level"):
        table.add_row("record-level epsilon (max device)", _fmt(result.get("record_epsilon_max")))
    table.add_row("sampling", f"{result['sampling']} (rate {result['sample_rate']:.4g})")
    table.add_row("devices", str(result["num_devices"]))
    table.add_row("rounds completed", str(result["rounds"]))
    if result.get("stopped_reason"):
        table.add_row("stopped", result["stopped_reason"])
    table.add_row("seconds", f"{result['seconds']:.1f}")
    return table


@with_federation_options
def simulate_command(
    *,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory to create (run.db, models, ...).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the run in this directory from its checkpoint."),
    ] = None,
    federation: FederationOptions,
    lazy_devices: Annotated[
        bool, typer.Option("--lazy-devices", help="Create a device's store when first sampled.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Flower and Ray logs.")] = False,
    as_json: Json = False,
) -> None:
    """Train the shared item model with Flower's simulation engine, one device per user.

    Each user of the dataset becomes a device with its own SQLite event store under
    RUN_DIR/devices/. Devices clip their whole update (user-level DP adds Gaussian noise
    to the sum); the run database, metrics.jsonl, model registry and a checkpoint per
    round are written to the run directory. A run without user-level noise is labelled
    non-private and reports no epsilon.

    Examples:
      $ fedpers simulate --dataset ml-100k --rounds 10 --out runs/nonprivate
      $ fedpers simulate --dataset ml-100k --rounds 10 --dp user --epsilon 8 --out runs/eps8
      $ fedpers simulate --dataset synthetic --rounds 5 --sample-rate 0.1 --json --out runs/s
      $ fedpers simulate --resume runs/eps8
    """
    run_dir = out or resume
    if run_dir is None:
        raise ConfigError("give --out RUN_DIR (or --resume RUN_DIR)")
    options = federation.simulate_options(run_dir, lazy_devices=lazy_devices)
    console = Console(stderr=True)
    progress = StepProgress(console, "round")

    def on_start(config: FederationConfig) -> None:
        label = (
            "non-private"
            if config.noise_multiplier is None
            else f"sigma={config.noise_multiplier:.3g} C={config.clip_norm:g}"
        )
        progress.start(config.rounds, f"{config.num_devices} devices, {label}")

    def on_round(summary: dict[str, Any]) -> None:
        parts = [f"{summary['status']}", f"{summary['participants']} devices"]
        if summary.get("loss") is not None:
            parts.append(f"loss {summary['loss']:.4f}")
        if summary.get("epsilon") is not None:
            parts.append(f"eps {summary['epsilon']:.3g}")
        if summary.get("hr10_sampled") is not None:
            parts.append(f"hr10_sampled {summary['hr10_sampled']:.4f}")
        progress.update(summary["round"], ", ".join(parts))

    from fedpers.simulation.federation.run import simulate  # flwr, torch, Ray: only when it runs

    with progress:
        result = simulate(
            options, resume_dir=resume, progress=on_round, on_start=on_start, verbose=verbose
        )
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(_final_table(result))


def main() -> None:
    """Run ``simulate`` on its own (``python -m fedpers.simulation.cli.simulate``)."""
    from fedpers.simulation.cli.edge import run_app

    standalone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    standalone.command()(simulate_command)
    run_app(standalone, prog_name="fedpers simulate")


if __name__ == "__main__":
    main()
