"""The edge of the ``fedpers`` command line: every error becomes one line on stderr.

Bad input of any kind (a click usage error such as an out-of-range ``--rounds``, a
missing argument, or a :class:`~fedpers.privacy.errors.FedpersError` raised by the
library) is reported the same way: ``error: MESSAGE`` on one line of stderr, exit code 2.
Nothing else in the package prints errors or calls :func:`sys.exit` for them.

Example:
    >>> import contextlib
    >>> import typer
    >>> demo = typer.Typer()
    >>> @demo.command()
    ... def hello(n: int = typer.Option(1, min=1)) -> None:
    ...     print("hello" * n)
    >>> try:
    ...     with contextlib.redirect_stderr(sys.stdout):  # show the stderr line here
    ...         run_app(demo, ["--n", "0"], prog_name="demo")
    ... except SystemExit as stop:
    ...     print("exit code", stop.code)
    error: Invalid value for '--n': 0 is not in the range x>=1. (see demo --help)
    exit code 2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click
import typer

from fedpers.privacy.errors import FedpersError

__all__ = ["EXIT_ERROR", "error_line", "run_app"]

EXIT_ERROR = 2
"""Exit code of every error that a user's input caused (click's usage-error code)."""


def error_line(exc: BaseException) -> str:
    """The one line that reports ``exc``: ``error: ...``, whitespace folded, no blank line.

    Args:
        exc: a :class:`FedpersError` or a :class:`click.ClickException`.

    Returns:
        ``"error: MESSAGE"``; for a usage error the command's ``--help`` hint is appended.
    """
    message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
    text = " ".join(message.split()) or type(exc).__name__
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        text = f"{text} (see {exc.ctx.command_path} --help)"
    return f"error: {text}"


def run_app(
    app: typer.Typer, args: Sequence[str] | None = None, *, prog_name: str = "fedpers"
) -> NoReturn:
    """Run ``app`` as a console script and exit; errors become one line (exit code 2).

    Args:
        app: the typer application.
        args: the arguments (default: ``sys.argv[1:]``).
        prog_name: the program name shown in usage and help.
    """
    try:
        rc = app(
            args=list(args) if args is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
        )
    except click.exceptions.NoArgsIsHelpError as exc:
        help_text = exc.format_message()  # empty when rich has printed the help already
        if help_text.strip():
            typer.echo(help_text, err=True)
        sys.exit(EXIT_ERROR)
    except (click.ClickException, FedpersError) as exc:
        typer.echo(error_line(exc), err=True)
        sys.exit(exc.exit_code if isinstance(exc, click.ClickException) else EXIT_ERROR)
    except click.exceptions.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
