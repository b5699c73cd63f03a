"""The root of the ``fedpers`` command line: one typer application, one sub-application per area.

Every command that reports figures accepts ``--json`` and then prints exactly one JSON
object on stdout; progress and logs go to stderr. Library errors and bad input become
one-line messages with exit code 2 at the edge (:mod:`fedpers.simulation.cli.edge`),
and nowhere deeper.

Start-up stays fast: the command modules registered here import only typer, rich and
light fedpers modules at import time; torch, flwr, Ray, TenSEAL, matplotlib and FastAPI
are imported inside the command functions that need them
(``tests/simulation/cli/test_cli_startup.py`` checks it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

__all__ = ["app", "package_version"]

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


def package_version() -> str:
    """The installed version of the ``fedpers`` distribution."""
    try:
        return version("fedpers")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fedpers {package_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed fedpers version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Privacy-preserving federated personalization."""


def _register_subcommands() -> None:
    """Attach the sub-applications; each lives in the module that owns its area."""
    from fedpers.client.cli import client_app
    from fedpers.server.cli.serve import serve_app
    from fedpers.simulation.cli.audit import audit
    from fedpers.simulation.cli.bench import bench_app
    from fedpers.simulation.cli.data import data_app
    from fedpers.simulation.cli.deploy import deploy_app
    from fedpers.simulation.cli.keys import keys_app
    from fedpers.simulation.cli.runs import runs_app
    from fedpers.simulation.cli.simulate import simulate_command

    app.add_typer(data_app, name="data")
    app.add_typer(bench_app, name="bench")
    app.add_typer(client_app, name="client")
    app.add_typer(keys_app, name="keys")
    app.add_typer(deploy_app, name="deploy")
    app.add_typer(runs_app, name="runs")
    app.add_typer(serve_app, name="serve")
    app.command("simulate")(simulate_command)
    app.command("audit")(audit)


_register_subcommands()
