"""The ``fedpers`` command line: one typer application, one sub-application per area.

Every command that reports figures accepts ``--json`` and then prints exactly one JSON
object on stdout; progress and logs go to stderr. Library errors become one-line
messages with exit code 2 here, at the edge, and nowhere deeper.
"""

from __future__ import annotations

import sys

import typer

from fedpers.privacy.errors import FedpersError

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedpers",
    help=(
        "Privacy-preserving federated personalization.\n\n"
        "Devices keep raw behaviour in a local SQLite store; a Flower federation trains "
        "the shared item model from clipped, noised (and optionally CKKS-encrypted) "
        "updates; every run can be audited.\n\n"
        "Start with `fedpers data fetch ml-100k`, then `fedpers bench centralized`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_subcommands() -> None:
    """Attach the sub-applications; each lives in the module that owns its area."""
    from fedpers.client.cli import client_app
    from fedpers.simulation.cli_audit import audit
    from fedpers.simulation.cli_bench import bench_app
    from fedpers.simulation.cli_data import data_app
    from fedpers.simulation.cli_deploy import deploy_app
    from fedpers.simulation.cli_keys import keys_app
    from fedpers.simulation.cli_simulate import simulate_command

    app.add_typer(data_app, name="data")
    app.add_typer(bench_app, name="bench")
    app.add_typer(client_app, name="client")
    app.add_typer(keys_app, name="keys")
    app.add_typer(deploy_app, name="deploy")
    app.command("simulate")(simulate_command)
    app.command("audit")(audit)


_register_subcommands()


def main() -> None:
    """Console-script entry point: run the app, turning fedpers errors into one line."""
    try:
        app()
    except FedpersError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
