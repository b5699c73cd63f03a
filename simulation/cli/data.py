"""``fedpers data``: fetch, inspect and generate interaction data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedpers.privacy.errors import DataError

__all__ = ["data_app"]

data_app = typer.Typer(
    help=(
        "Fetch, inspect and generate interaction data.\n\n"
        "A dataset is ml-100k (MovieLens-100K, downloaded once into the cache),\n"
        "synthetic (generated from a seed) or the path of a CSV, TSV or JSONL log\n"
        "with columns user, item and optionally rating, timestamp, event_type.\n\n"
        "  $ fedpers data fetch ml-100k\n"
        "  $ fedpers data info ml-100k\n"
        "  $ fedpers data synth --users 10000 --items 2000 --out synth.csv\n"
        "  $ fedpers data info synth.csv --json"
    ),
    no_args_is_help=True,
)

CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Data cache directory (default: $FEDPERS_CACHE or ~/.cache/fedpers).",
        file_okay=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
]


def _stderr() -> Console:
    """A console on stderr for progress and notes (stdout stays machine-readable)."""
    return Console(stderr=True)


def _print_json(payload: dict[str, Any]) -> None:
    """Print one JSON object on stdout."""
    typer.echo(json.dumps(payload, sort_keys=False))


@data_app.command("fetch")
def fetch(
    dataset: Annotated[
        str, typer.Argument(help="The dataset to download (ml-100k).", metavar="ml-100k")
    ],
    cache_dir: CacheDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a dataset into the local cache and print where its files are.

    MovieLens-100K comes from the recbole 1.2.1 wheel on PyPI, fetched with
    pip download --no-deps (recbole itself is never installed). Only
    ml-100k.inter, ml-100k.user and ml-100k.item are extracted, checked against
    pinned SHA-256 digests and moved into CACHE/ml-100k/ atomically. Later runs
    find the verified files and download nothing.

    Examples:
      $ fedpers data fetch ml-100k
      $ FEDPERS_CACHE=/srv/cache fedpers data fetch ml-100k
      $ fedpers data fetch ml-100k --cache-dir ./cache --json
    """
    if dataset != "ml-100k":
        raise typer.BadParameter(
            f"{dataset!r} cannot be fetched: only 'ml-100k' is downloaded "
            "('synthetic' is generated and file paths are read in place)",
            param_hint="DATASET",
        )
    from fedpers.simulation.data.movielens import ML100K_FILES, fetch_movielens_100k

    with _stderr().status("Fetching MovieLens-100K (recbole 1.2.1 wheel from PyPI)..."):
        directory = fetch_movielens_100k(cache_dir)
    if as_json:
        _print_json(
            {
                "dataset": dataset,
                "path": str(directory),
                "files": {name: str(directory / name) for name in ML100K_FILES},
                "sha256": dict(ML100K_FILES),
            }
        )
    else:
        typer.echo(str(directory))


def _summary_table(summary: dict[str, Any]) -> Table:
    """Render a dataset summary as a two-column table."""
    table = Table(title=f"dataset {summary['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("users", f"{summary['users']:,}")
    table.add_row("items", f"{summary['items']:,}")
    table.add_row("interactions", f"{summary['interactions']:,}")
    table.add_row("density", f"{summary['density']:.4%}")
    span = summary["time"]
    if span is not None:
        table.add_row(
            "time span",
            f"{span['first']} .. {span['last']} ({span['span_days']:.1f} days)",
        )
    ratings = summary["ratings"]
    if ratings is not None:
        table.add_row(
            "ratings", f"{ratings['min']:g} .. {ratings['max']:g} (mean {ratings['mean']:.3f})"
        )
    for label in ("per_user", "per_item"):
        dist = summary[label]
        table.add_row(
            label.replace("_", " "),
            f"min {dist['min']:g}, median {dist['median']:g}, max {dist['max']:g}",
        )
    if summary["event_types"]:
        table.add_row(
            "event types", ", ".join(f"{k} ({v:,})" for k, v in summary["event_types"].items())
        )
    for name, column in summary["user_attributes"].items():
        if column["kind"] == "numeric":
            text = f"{column['min']:g} .. {column['max']:g}"
        else:
            text = f"{column['distinct']} values: " + ", ".join(
                f"{k} ({v:,})" for k, v in column["top"].items()
            )
        table.add_row(f"user: {name}", text)
    features = summary["item_features"]
    if features:
        shown = ", ".join(features[:6]) + (", ..." if len(features) > 6 else "")
        table.add_row("item features", f"{len(features)}: {shown}")
    return table


@data_app.command("info")
def info(
    dataset: Annotated[
        str,
        typer.Argument(
            help="ml-100k, synthetic, or the path of a .csv, .tsv or .jsonl log.",
            metavar="ml-100k|synthetic|FILE",
        ),
    ],
    cache_dir: CacheDirOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Describe a dataset: size, density, time span, ratings, attributes.

    ML-100K is fetched first if it is not in the cache. "synthetic" is the
    default generator configuration (1,000 users, 1,000 items, 20 events each)
    with --seed; write other sizes with fedpers data synth and inspect the file.
    A malformed log stops with one line naming the file, line and column.

    Examples:
      $ fedpers data info ml-100k
      $ fedpers data info synthetic --seed 3 --json
      $ fedpers data info ./events.csv
    """
    from fedpers.simulation.data.loader import load_dataset
    from fedpers.simulation.data.summary import dataset_summary

    with _stderr().status(f"Loading {dataset}..."):
        data = load_dataset(dataset, cache_dir=cache_dir, seed=seed)
    summary = dataset_summary(data)
    if as_json:
        _print_json(summary)
    else:
        Console().print(_summary_table(summary))


@data_app.command("synth")
def synth(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Destination log: .csv, .tsv, .jsonl or .ndjson (written atomically).",
            dir_okay=False,
        ),
    ],
    users: Annotated[
        int, typer.Option("--users", help="Number of users (1 to 1,000,000).")
    ] = 1_000,
    items: Annotated[int, typer.Option("--items", help="Number of items (2 to 100,000).")] = 1_000,
    events_per_user: Annotated[
        int, typer.Option("--events-per-user", help="Distinct items per user.")
    ] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    dim: Annotated[int, typer.Option("--dim", help="Latent factor dimension.")] = 16,
    popularity_exponent: Annotated[
        float,
        typer.Option("--popularity-exponent", help="Power-law exponent of item popularity."),
    ] = 1.0,
    affinity_scale: Annotated[
        float,
        typer.Option("--affinity-scale", help="Strength of user-item affinity (0: none)."),
    ] = 2.0,
    as_json: JsonOption = False,
) -> None:
    r"""Generate a seeded synthetic log and write it as a bring-your-own file.

    Item popularity follows a power law; users pick items by latent-factor
    affinity, so there is signal to learn; timestamps increase within each
    user. The file has columns user, item, rating, timestamp; pass it wherever
    a dataset is accepted (--dataset FILE). Equal arguments write equal files,
    and a failed run leaves no partial file behind.

    Examples:
      $ fedpers data synth --users 10000 --items 5000 --out synth.csv
      $ fedpers data synth --users 1000000 --items 100000 \
          --events-per-user 10 --seed 1 --out big.jsonl --json
    """
    from fedpers.simulation.data.logs import LOG_SUFFIXES, write_interaction_log
    from fedpers.simulation.data.synthetic import SyntheticConfig, generate_synthetic

    if out.suffix.lower() not in LOG_SUFFIXES:
        raise DataError(
            f"{out}: unsupported extension '{out.suffix}', expected one of "
            + ", ".join(LOG_SUFFIXES)
        )
    config = SyntheticConfig(
        n_users=users,
        n_items=items,
        events_per_user=events_per_user,
        seed=seed,
        dim=dim,
        popularity_exponent=popularity_exponent,
        affinity_scale=affinity_scale,
    )
    console = _stderr()
    started = time.perf_counter()
    with console.status(f"Generating {users:,} users x {events_per_user} events..."):
        data = generate_synthetic(config)
    generated = time.perf_counter()
    with console.status(f"Writing {data.n_interactions:,} interactions to {out}..."):
        write_interaction_log(data, out)
    finished = time.perf_counter()
    payload = {
        "path": str(out),
        "users": data.n_users,
        "items": data.n_items,
        "interactions": data.n_interactions,
        "seed": seed,
        "generate_seconds": round(generated - started, 3),
        "write_seconds": round(finished - generated, 3),
    }
    if as_json:
        _print_json(payload)
    else:
        typer.echo(
            f"wrote {data.n_interactions:,} interactions ({data.n_users:,} users, "
            f"{data.n_items:,} items) to {out}"
        )
