"""Generate ``docs/cli.md`` from the ``fedpers`` command tree itself.

The reference is built from click's view of the typer app (command names, help texts,
arguments and options with their defaults), so it cannot drift from the code:
``tests/test_docs.py`` regenerates it and compares. Regenerate with::

    python -m fedpers.simulation.cli.reference > docs/cli.md
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator

import click
import typer

__all__ = ["command_paths", "render_reference"]

_HEADER = """# CLI reference

Generated from the code by `python -m fedpers.simulation.cli.reference > docs/cli.md`;
a test fails when this page and the code disagree. `fedpers COMMAND --help` shows the
same with examples.

Every command that reports figures accepts `--json` and then prints exactly one JSON
object on stdout; progress and logs go to stderr. Errors are one line on stderr with
exit code 2.
"""


def _root() -> click.Command:
    from fedpers.simulation.cli.app import app

    return typer.main.get_command(app)


def _walk(
    cmd: click.Command, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], (*path, name))


def command_paths() -> list[str]:
    """Every command path, e.g. ``"fedpers data fetch"``, groups included."""
    return [" ".join(path) for path, _ in _walk(_root(), ("fedpers",))]


def _param_line(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return f"- `{param.human_readable_name}` (argument{'' if param.required else ', optional'})"
    assert isinstance(param, click.Option)
    flags = ", ".join(f"`{opt}`" for opt in (*param.opts, *param.secondary_opts))
    text = " ".join((param.help or "").split())
    default = param.default
    shown = (
        ""
        if param.is_flag or default is None or callable(default) or default == ()
        else f" (default: `{default}`)"
    )
    return f"- {flags}: {text}{shown}".rstrip()


def render_reference() -> str:
    """The whole reference as Markdown."""
    parts = [_HEADER]
    for path, cmd in _walk(_root(), ("fedpers",)):
        if len(path) == 1:
            continue
        level = "#" * min(len(path), 4)
        parts.append(f"{level} `{' '.join(path)}`\n")
        help_text = inspect.cleandoc(cmd.help or "").strip()
        if help_text:
            parts.append(help_text + "\n")
        params = [p for p in cmd.params if p.name != "help"]
        if params and not isinstance(cmd, click.Group):
            parts.append("\n".join(_param_line(p) for p in params) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render_reference())
