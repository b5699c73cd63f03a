"""The federation options ``fedpers simulate`` and ``fedpers deploy prepare`` share.

:class:`FederationOptions` is the one table of those options: each field is one flag,
with its type, its ``typer.Option`` (name, bounds, help) and its default. A command
takes them all as one typed object by declaring a ``federation: FederationOptions``
parameter and wearing :func:`with_federation_options`, which puts every flag of the table
in the command's signature at that place (so typer lists them in ``--help``) and hands
the command the :class:`FederationOptions` they build. Adding a federation flag is one
field here, plus its use in :meth:`FederationOptions.simulate_options` where it is not
a :class:`~fedpers.simulation.federation.run.SimulateOptions` field of the same name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fedpers.simulation.federation.run import SimulateOptions

__all__ = ["FederationOptions", "Json", "with_federation_options"]

Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


@dataclass(frozen=True)
class FederationOptions:
    """The federation flags of ``fedpers simulate`` and ``fedpers deploy prepare``.

    Fields are in the order ``--help`` lists them; each field's name is its parameter
    name in the commands.
    """

    dataset: Annotated[
        str,
        typer.Option("--dataset", help="ml-100k, synthetic, or the path of a CSV/TSV/JSONL log."),
    ] = "synthetic"
    rounds: Annotated[
        int | None, typer.Option("--rounds", min=1, help="Federated rounds T (default: recipe).")
    ] = None
    dp: Annotated[str, typer.Option("--dp", help="none, user, record or both.")] = "none"
    epsilon: Annotated[
        float | None,
        typer.Option("--epsilon", help="User-level budget; with --rounds solves sigma."),
    ] = None
    noise_multiplier: Annotated[
        float | None, typer.Option("--noise-multiplier", help="User-level sigma (gives epsilon).")
    ] = None
    clip: Annotated[
        float | None, typer.Option("--clip", help="Clip norm C of a device's whole update.")
    ] = None
    adaptive_clip: Annotated[
        bool, typer.Option("--adaptive-clip", help="Adaptive clipping (Andrew et al. 2021).")
    ] = False
    clients_per_round: Annotated[
        int | None, typer.Option("--clients-per-round", min=1, help="Fixed cohort size M.")
    ] = None
    sample_rate: Annotated[
        float | None, typer.Option("--sample-rate", help="Poisson sampling rate q in (0, 1].")
    ] = None
    mode: Annotated[
        str, typer.Option("--mode", help="cohort (many devices per node) or node (one per node).")
    ] = "cohort"
    reply: Annotated[
        str, typer.Option("--reply", help="Cohort nodes send per-device updates or their sum.")
    ] = "per-device"
    server_opt: Annotated[
        str | None, typer.Option("--server-opt", help="fedavg, fedavgm or fedadam.")
    ] = None
    server_lr: Annotated[
        float | None, typer.Option("--server-lr", help="Server learning rate.")
    ] = None
    secure_agg: Annotated[str, typer.Option("--secure-agg", help="none or he (CKKS).")] = "none"
    monitoring_metrics: Annotated[
        str,
        typer.Option(
            "--monitoring-metrics",
            help="off, or plaintext: devices also send their update norm, clipped flag, "
            "examples and loss per device in PLAINTEXT, outside the DP guarantee (warns).",
        ),
    ] = "off"
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="With --secure-agg he: the CKKS key-set folder (fedpers keys generate); "
            "default RUN_DIR/keys, generated when missing.",
        ),
    ] = None
    seed: Annotated[int, typer.Option("--seed", help="Run seed.")] = 0
    dim: Annotated[int | None, typer.Option("--dim", min=1, help="Embedding dimension.")] = None
    local_epochs: Annotated[
        int | None, typer.Option("--local-epochs", min=0, help="Local epochs per round.")
    ] = None
    lr_item: Annotated[float | None, typer.Option("--lr-item", help="Local item step size.")] = None
    lr_user: Annotated[float | None, typer.Option("--lr-user", help="Local user step size.")] = None
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            help="auto: unset options follow the recipe tuned for the budget; none: defaults.",
        ),
    ] = "auto"
    eval_every: Annotated[
        int, typer.Option("--eval-every", min=0, help="Evaluate every N rounds (0: at the end).")
    ] = 0
    eval_devices: Annotated[
        int | None,
        typer.Option("--eval-devices", min=1, help="Evaluate a fixed sample of this many devices."),
    ] = None
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="Flower nodes in cohort mode.")] = 2
    no_p10_fraction: Annotated[
        float, typer.Option("--no-p10-fraction", help="Fraction of devices without P10 consent.")
    ] = 0.0
    gpc_fraction: Annotated[
        float, typer.Option("--gpc-fraction", help="Fraction of devices with GPC set.")
    ] = 0.0
    delta: Annotated[float | None, typer.Option("--delta", help="Default 0.1/N.")] = None
    record_noise_multiplier: Annotated[
        float, typer.Option("--record-noise-multiplier", help="DP-SGD sigma (--dp record/both).")
    ] = 1.0
    record_clip: Annotated[
        float, typer.Option("--record-clip", help="DP-SGD per-example clip norm.")
    ] = 1.0
    record_epsilon_budget: Annotated[
        float | None,
        typer.Option("--record-epsilon-budget", help="Each device's record-level budget."),
    ] = None

    def simulate_options(self, out: Path, **extra: Any) -> SimulateOptions:
        """The :class:`SimulateOptions` of a run in ``out`` with these flags.

        ``nodes`` becomes ``num_nodes``, the given local-training flags become ``local``
        and ``keys`` a string; every other flag keeps its name. ``extra`` sets further
        :class:`SimulateOptions` fields a command has on its own (``lazy_devices``).
        """
        from fedpers.simulation.federation.run import SimulateOptions  # flwr, torch: only when run

        flags = dataclasses.asdict(self)
        local = {
            "epochs": flags.pop("local_epochs"),
            "lr_item": flags.pop("lr_item"),
            "lr_user": flags.pop("lr_user"),
        }
        keys = flags.pop("keys")
        return SimulateOptions(
            out=str(out),
            num_nodes=flags.pop("nodes"),
            keys=None if keys is None else str(keys),
            local={name: value for name, value in local.items() if value is not None},
            **flags,
            **extra,
        )


_PLACEHOLDER = "federation"


def _federation_parameters(placeholder: inspect.Parameter) -> list[inspect.Parameter]:
    """One typer parameter per field of :class:`FederationOptions`, in field order.

    Each is of the same kind (keyword-only or not) as the ``federation`` parameter it
    replaces.
    """
    hints = typing.get_type_hints(FederationOptions, include_extras=True)
    return [
        inspect.Parameter(
            field.name, placeholder.kind, default=field.default, annotation=hints[field.name]
        )
        for field in dataclasses.fields(FederationOptions)
    ]


def with_federation_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` every flag of :class:`FederationOptions` as one object.

    ``command`` declares a ``federation: FederationOptions`` parameter; the returned
    command has the flags in its place (what typer reads to build the options and
    ``--help``) and calls ``command`` with ``federation=FederationOptions(...)`` of them
    and its other arguments unchanged.

    Raises:
        TypeError: when ``command`` has no ``federation`` parameter.
    """
    signature = inspect.signature(command, eval_str=True)
    placeholder = signature.parameters.get(_PLACEHOLDER)
    if placeholder is None:
        raise TypeError(f"{command.__qualname__} has no {_PLACEHOLDER!r} parameter")
    shared = _federation_parameters(placeholder)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        parameters.extend(shared if parameter is placeholder else [parameter])
    names = [parameter.name for parameter in shared]

    @functools.wraps(command)
    def with_options(**arguments: Any) -> None:
        flags = {name: arguments.pop(name) for name in names}
        command(**arguments, **{_PLACEHOLDER: FederationOptions(**flags)})

    with_options.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_options.__annotations__ = {
        **{parameter.name: parameter.annotation for parameter in parameters},
        "return": signature.return_annotation,
    }
    return with_options
