"""The ``fedpers`` command line: :func:`main` is the console script.

The application and its sub-applications live in :mod:`fedpers.simulation.cli.app`;
each command group in its own module here (``audit``, ``bench``, ``data``, ``deploy``,
``keys``, ``runs``, ``simulate``), the options ``simulate`` and ``deploy prepare`` share
in ``options``, and the one error edge in ``edge``. Importing this package imports
nothing else, so a command module's own imports stay light.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Console-script entry point: run the app; every error is one line, exit code 2."""
    from fedpers.simulation.cli.app import app
    from fedpers.simulation.cli.edge import run_app

    run_app(app, prog_name="fedpers")
