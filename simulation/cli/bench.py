"""``fedpers bench``: reference models and measurements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["CENTRALIZED_DEFAULTS", "bench_app"]

bench_app = typer.Typer(
    help=(
        "Reference models and measurements.\n\n"
        "  $ fedpers bench centralized --dataset ml-100k\n"
        "  $ fedpers bench centralized --dataset synthetic --json"
    ),
    no_args_is_help=True,
)

CENTRALIZED_DEFAULTS: dict[str, Any] = {
    "dim": 128,
    "epochs": 60,
    "lr": 0.003,
    "l2": 0.005,
    "negatives": 8,
    "use_item_features": False,
}
"""The option defaults of ``bench centralized``: :class:`CentralizedConfig`'s own (a test
keeps them equal), written out so that ``fedpers --help`` need not import torch."""
_DEFAULTS = CENTRALIZED_DEFAULTS


def _report_tables(report: dict[str, Any]) -> list[Table]:
    """The model beside popularity, then per-group HR@10 (sampled / full)."""
    from fedpers.simulation.evaluation.protocol import METRIC_NAMES

    main = Table(
        title=f"centralized reference: {report['dataset']}",
        caption=(
            f"{report['num_users']:,} users, {report['num_items']:,} items, "
            f"{report['eval_users']:,} evaluated"
        ),
    )
    main.add_column("metric", style="bold")
    main.add_column(report["model"], justify="right")
    main.add_column("popularity", justify="right")
    for name in (*METRIC_NAMES, "coverage10"):
        main.add_row(name, f"{report[name]:.4f}", f"{report['popularity'][name]:.4f}")
    main.add_row(
        "train seconds",
        f"{report['train_seconds']:.1f} ({report['train_cpu_seconds']:.1f} cpu)",
        "",
    )
    main.add_row("selected epochs", str(report["best_epoch"]), "")
    tables = [main]
    if report["groups"]:
        groups = Table(title="per group: hr10_sampled / hr10_full")
        groups.add_column("group", style="bold")
        groups.add_column("users", justify="right")
        groups.add_column(report["model"], justify="right")
        groups.add_column("popularity", justify="right")
        for name, per_label in report["groups"].items():
            for label, row in per_label.items():
                model, pop = row["model"], row["popularity"]
                groups.add_row(
                    f"{name}={label}",
                    str(row["n_users"]),
                    f"{model['hr10_sampled']:.3f} / {model['hr10_full']:.3f}",
                    f"{pop['hr10_sampled']:.3f} / {pop['hr10_full']:.3f}",
                )
            gap = report["group_gaps"]["model"][name]
            groups.add_row(
                f"{name} gap", "", f"{gap['hr10_sampled']:.3f} / {gap['hr10_full']:.3f}", ""
            )
        tables.append(groups)
    return tables


@bench_app.command("centralized")
def centralized(
    dataset: Annotated[
        str,
        typer.Option("--dataset", help="ml-100k, synthetic, or the path of a CSV/TSV/JSONL log."),
    ] = "ml-100k",
    dim: Annotated[int, typer.Option(help="Embedding dimension.")] = _DEFAULTS["dim"],
    epochs: Annotated[
        int, typer.Option(help="Maximum selection epochs (early stopping on validation).")
    ] = _DEFAULTS["epochs"],
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = _DEFAULTS["lr"],
    l2: Annotated[float, typer.Option(help="L2 penalty on user and item vectors.")] = (
        _DEFAULTS["l2"]
    ),
    negatives: Annotated[
        int, typer.Option(help="Negative items sampled per positive pair.")
    ] = _DEFAULTS["negatives"],
    item_features: Annotated[
        bool, typer.Option(help="Train the item attribute tower (needs item features).")
    ] = _DEFAULTS["use_item_features"],
    seed: Annotated[int, typer.Option(help="Seed of training (and of synthetic data).")] = 0,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Data cache directory (default: $FEDPERS_CACHE or ~/.cache/fedpers).",
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
    ] = False,
) -> None:
    """Train the centralized BPR reference and score it beside the popularity baseline.

    The protocol is leave-one-out by timestamp: the number of epochs is selected on
    each user's second-latest item, the model is refitted on everything before the
    latest item and scored on it, against 99 sampled negatives (hr10_sampled,
    ndcg10_sampled) and against the full catalogue minus the user's history
    (hr10_full, ndcg10_full). Progress goes to stderr.

    Examples:
      $ fedpers bench centralized --dataset ml-100k
      $ fedpers bench centralized --dataset ml-100k --dim 32 --json
      $ fedpers bench centralized --dataset events.csv --epochs 20
    """
    import torch

    from fedpers.simulation.data.loader import load_dataset
    from fedpers.simulation.evaluation.centralized import CentralizedConfig, centralized_report

    torch.set_num_threads(1)
    config = CentralizedConfig(
        dim=dim,
        epochs=epochs,
        lr=lr,
        l2=l2,
        negatives=negatives,
        use_item_features=item_features,
        seed=seed,
    )
    err = Console(stderr=True)
    with err.status(f"Loading {dataset}..."):
        data = load_dataset(dataset, cache_dir=cache_dir, seed=seed)
    report = centralized_report(data, config)
    if as_json:
        typer.echo(json.dumps(report))
        return
    out = Console()
    for table in _report_tables(report):
        out.print(table)
