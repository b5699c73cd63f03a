"""The federation options ``fedpers simulate`` and ``fedpers deploy prepare`` share.

Each option is defined once here, as an ``Annotated`` type for a typer parameter, and
:func:`federation_options` turns the parameters into
:class:`~fedpers.simulation.federation.run.SimulateOptions`, so that both commands build the
same run from the same flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fedpers.simulation.federation.run import SimulateOptions

__all__ = [
    "AdaptiveClip",
    "Clients",
    "Clip",
    "Dataset",
    "Delta",
    "Dim",
    "Dp",
    "Epsilon",
    "EvalDevices",
    "EvalEvery",
    "GpcFraction",
    "Json",
    "Keys",
    "LocalEpochs",
    "LrItem",
    "LrUser",
    "Mode",
    "NoP10Fraction",
    "Nodes",
    "NoiseMultiplier",
    "Recipe",
    "RecordClip",
    "RecordEpsilonBudget",
    "RecordNoiseMultiplier",
    "Reply",
    "Rounds",
    "SampleRate",
    "SecureAgg",
    "Seed",
    "ServerLr",
    "ServerOpt",
    "federation_options",
]

Dataset = Annotated[
    str, typer.Option("--dataset", help="ml-100k, synthetic, or the path of a CSV/TSV/JSONL log.")
]
Rounds = Annotated[
    int | None, typer.Option("--rounds", min=1, help="Federated rounds T (default: recipe).")
]
Dp = Annotated[str, typer.Option("--dp", help="none, user, record or both.")]
Epsilon = Annotated[
    float | None, typer.Option("--epsilon", help="User-level budget; with --rounds solves sigma.")
]
NoiseMultiplier = Annotated[
    float | None, typer.Option("--noise-multiplier", help="User-level sigma (gives epsilon).")
]
Clip = Annotated[
    float | None, typer.Option("--clip", help="Clip norm C of a device's whole update.")
]
AdaptiveClip = Annotated[
    bool, typer.Option("--adaptive-clip", help="Adaptive clipping (Andrew et al. 2021).")
]
Clients = Annotated[
    int | None, typer.Option("--clients-per-round", min=1, help="Fixed cohort size M.")
]
SampleRate = Annotated[
    float | None, typer.Option("--sample-rate", help="Poisson sampling rate q in (0, 1].")
]
Mode = Annotated[
    str, typer.Option("--mode", help="cohort (many devices per node) or node (one per node).")
]
Reply = Annotated[
    str, typer.Option("--reply", help="Cohort nodes send per-device updates or their sum.")
]
ServerOpt = Annotated[str | None, typer.Option("--server-opt", help="fedavg, fedavgm or fedadam.")]
ServerLr = Annotated[float | None, typer.Option("--server-lr", help="Server learning rate.")]
SecureAgg = Annotated[str, typer.Option("--secure-agg", help="none or he (CKKS).")]
MonitoringMetrics = Annotated[
    str,
    typer.Option(
        "--monitoring-metrics",
        help="off, or plaintext: devices also send their update norm, clipped flag, "
        "examples and loss per device in PLAINTEXT, outside the DP guarantee (warns).",
    ),
]
Keys = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="With --secure-agg he: the CKKS key-set folder (fedpers keys generate); "
        "default RUN_DIR/keys, generated when missing.",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Run seed.")]
Dim = Annotated[int | None, typer.Option("--dim", min=1, help="Embedding dimension.")]
LocalEpochs = Annotated[
    int | None, typer.Option("--local-epochs", min=0, help="Local epochs per round.")
]
LrItem = Annotated[float | None, typer.Option("--lr-item", help="Local item step size.")]
LrUser = Annotated[float | None, typer.Option("--lr-user", help="Local user step size.")]
Recipe = Annotated[
    str,
    typer.Option(
        "--recipe",
        help="auto: unset options follow the recipe tuned for the budget; none: defaults.",
    ),
]
EvalEvery = Annotated[
    int, typer.Option("--eval-every", min=0, help="Evaluate every N rounds (0: at the end).")
]
EvalDevices = Annotated[
    int | None,
    typer.Option("--eval-devices", min=1, help="Evaluate a fixed sample of this many devices."),
]
Nodes = Annotated[int, typer.Option("--nodes", min=1, help="Flower nodes in cohort mode.")]
NoP10Fraction = Annotated[
    float, typer.Option("--no-p10-fraction", help="Fraction of devices without P10 consent.")
]
GpcFraction = Annotated[
    float, typer.Option("--gpc-fraction", help="Fraction of devices with GPC set.")
]
Delta = Annotated[float | None, typer.Option("--delta", help="Default 0.1/N.")]
RecordNoiseMultiplier = Annotated[
    float, typer.Option("--record-noise-multiplier", help="DP-SGD sigma (--dp record/both).")
]
RecordClip = Annotated[float, typer.Option("--record-clip", help="DP-SGD per-example clip norm.")]
RecordEpsilonBudget = Annotated[
    float | None,
    typer.Option("--record-epsilon-budget", help="Each device's record-level budget."),
]
Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def federation_options(
    *,
    out: Path | str,
    nodes: int,
    keys: Path | None,
    local_epochs: int | None,
    lr_item: float | None,
    lr_user: float | None,
    **fields: Any,
) -> SimulateOptions:
    """The :class:`SimulateOptions` of the shared options (CLI names -> option fields).

    Args:
        out: the run directory.
        nodes: Flower nodes in cohort mode (``num_nodes``).
        keys: the key-set folder, if given.
        local_epochs: local epochs (``local["epochs"]``), if given.
        lr_item: local item step size, if given.
        lr_user: local user step size, if given.
        fields: every other option under its :class:`SimulateOptions` field name.
    """
    from fedpers.simulation.federation.run import SimulateOptions  # flwr, torch: only when run

    local = {"epochs": local_epochs, "lr_item": lr_item, "lr_user": lr_user}
    return SimulateOptions(
        out=str(out),
        num_nodes=nodes,
        keys=None if keys is None else str(keys),
        local={k: v for k, v in local.items() if v is not None},
        **fields,
    )
