"""The federation options: one table (:class:`FederationOptions`) that both commands share."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import click
import pytest
import typer
from typer.testing import CliRunner

from fedpers.simulation.cli.app import app
from fedpers.simulation.cli.options import FederationOptions, with_federation_options

FLAGS = [field.name for field in dataclasses.fields(FederationOptions)]


def _options(*path: str) -> dict[str, click.Option]:
    command = typer.main.get_command(app)
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize("path", [("simulate",), ("deploy", "prepare")], ids=" ".join)
def test_both_commands_take_every_federation_flag_in_one_block(path: tuple[str, ...]) -> None:
    names = list(_options(*path))
    start = names.index(FLAGS[0])
    assert names[start : start + len(FLAGS)] == FLAGS


def test_a_federation_flag_reads_the_same_in_both_commands() -> None:
    simulate, prepare = _options("simulate"), _options("deploy", "prepare")
    for name in FLAGS:
        assert simulate[name].to_info_dict() == prepare[name].to_info_dict(), name


def test_the_command_gets_the_flags_as_one_object_and_its_own_arguments_unchanged() -> None:
    seen: dict[str, object] = {}

    @with_federation_options
    def probe(
        *,
        out: Annotated[Path, typer.Option("--out")],
        federation: FederationOptions,
        loud: Annotated[bool, typer.Option("--loud")] = False,
    ) -> None:
        seen.update(out=out, federation=federation, loud=loud)

    probe_app = typer.Typer()
    probe_app.command()(probe)
    args = ["--out", "o", "--rounds", "3", "--nodes", "4", "--keys", "k", "--dp", "user", "--loud"]
    result = CliRunner().invoke(probe_app, args)
    assert result.exit_code == 0, result.output
    expected = FederationOptions(rounds=3, nodes=4, keys=Path("k"), dp="user")
    assert seen == {"out": Path("o"), "federation": expected, "loud": True}


def test_a_command_without_the_federation_parameter_is_refused() -> None:
    def lonely(out: Path) -> None: ...

    with pytest.raises(TypeError, match="federation"):
        with_federation_options(lonely)


def test_simulate_options_renames_the_cli_flags_and_keeps_every_default() -> None:
    from fedpers.simulation.federation.run import SimulateOptions

    assert FederationOptions().simulate_options(Path("run")) == SimulateOptions(out="run")
    flags = FederationOptions(local_epochs=2, lr_user=0.5, nodes=3, keys=Path("k"), rounds=7)
    assert flags.simulate_options(Path("run"), lazy_devices=True) == SimulateOptions(
        out="run",
        rounds=7,
        num_nodes=3,
        keys="k",
        local={"epochs": 2, "lr_user": 0.5},
        lazy_devices=True,
    )
