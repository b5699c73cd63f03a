"""``fedpers client``: the device's own commands over its local store.

Create a store, ingest events, decide consent, and exercise the owner's rights
(export, erase), or inspect the store and its privacy ledger. Every command takes the
store file as its first argument. Errors are one line on stderr with exit code 2;
``--json`` prints exactly one JSON object on stdout.

The helpers :func:`_edge`, :func:`_open_store` and :func:`_emit_json` are shared by every
command of this sub-app, the model-backed ones (``recommend``) included.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # the store (sqlite-utils, numpy) loads inside the commands: fast --help
    from fedpers.client.consent import ConsentManager
    from fedpers.client.store import EventStore
from fedpers.client.private_file import private_file
from fedpers.privacy.consent import ConsentState, Purpose, parse_purposes
from fedpers.privacy.errors import DataError, FedpersError

__all__ = ["client_app"]

_PURPOSE_HELP = "\n\n".join(
    f"{p.label} ({int(p)}, {p.name.lower()}): {p.description}" for p in Purpose
)

client_app = typer.Typer(
    name="client",
    add_completion=False,
    help=(
        "The device side: a local SQLite store of your events, your consent, your private "
        "profile and your privacy ledger. Raw events never leave the device except through "
        "`export`, your own copy."
    ),
    epilog=(
        "Examples:\n\n"
        "  fedpers client init device.db --items 1682\n\n"
        "  fedpers client consent grant device.db P1 P5 P6\n\n"
        "  fedpers client ingest device.db events.jsonl\n\n"
        "  fedpers client info device.db --json\n\n"
        "  fedpers client export device.db --out my-data.json\n\n"
        "  fedpers client erase device.db --yes"
    ),
    no_args_is_help=True,
)

consent_app = typer.Typer(
    help=(
        "Grant, withdraw or show consent (IAB TCF v2.2 purposes). Name purposes by number "
        "(5), label (P5) or name (create_profiles).\n\n" + _PURPOSE_HELP
    ),
    epilog=(
        "Examples:\n\n"
        "  fedpers client consent grant device.db 1 5 6 10\n\n"
        "  fedpers client consent withdraw device.db P10\n\n"
        "  fedpers client consent withdraw device.db --all\n\n"
        "  fedpers client consent show device.db --log"
    ),
    no_args_is_help=True,
)
client_app.add_typer(consent_app, name="consent")

StoreArg = Annotated[Path, typer.Argument(help="The device's store file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


class _Switch(StrEnum):
    ON = "on"
    OFF = "off"


@contextmanager
def _edge() -> Iterator[None]:
    """Turn fedpers errors into a one-line message on stderr and exit code 2."""
    try:
        yield
    except FedpersError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _open_store(path: Path) -> Iterator[EventStore]:
    from fedpers.client.store import EventStore

    store = EventStore.open(path)
    try:
        yield store
    finally:
        store.close()


def _consent(store: EventStore) -> ConsentManager:
    from fedpers.client.consent import ConsentManager

    return ConsentManager(store)


def _emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False))


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read_catalogue(path: Path) -> list[str]:
    """A catalogue file: a JSON array of item ids, or one id per line (``#`` comments)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the catalogue: {exc}") from None
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(items, list) or not all(isinstance(i, str | int) for i in items):
            raise DataError(f"{path}: a JSON catalogue is an array of item ids")
        return [str(i) for i in items]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _consent_lines(state: ConsentState) -> list[str]:
    lines = [
        f"  [{'x' if p in state.granted else ' '}] {p.label:<4} {p.description}" for p in Purpose
    ]
    lines.append(f"  GPC (opt-out of sharing): {'on' if state.gpc else 'off'}")
    lines.append(f"  last changed: {_when(state.updated_at)}")
    return lines


# -- store lifecycle ---------------------------------------------------------------------


@client_app.command("init")
def init_command(
    store: StoreArg,
    catalogue: Annotated[
        Path | None,
        typer.Option(
            "--catalogue",
            help="Item ids in model order: a .json array, or a text file with one id a line.",
            show_default=False,
        ),
    ] = None,
    items: Annotated[
        int | None,
        typer.Option("--items", help="Use item ids 0 .. N-1 instead of a file.", min=1),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new store with the catalogue of the current global model.

    The catalogue lists item ids in the model's row order.

    Nothing is recorded until you grant P1 and P5 (`consent grant STORE 1 5`).

    Example: fedpers client init device.db --catalogue items.txt
    """
    with _edge():
        if (catalogue is None) == (items is None):
            raise DataError("give exactly one of --catalogue FILE or --items N")
        ids = _read_catalogue(catalogue) if catalogue else [str(i) for i in range(items or 0)]
        from fedpers.client.store import EventStore

        with EventStore.create(store, ids) as created:
            info = created.info()
        if as_json:
            _emit_json(info)
        else:
            typer.echo(f"created {store} with {info['catalogue_size']} items")
            typer.echo(f"next: fedpers client consent grant {store} 1 5")


@client_app.command("ingest")
def ingest_command(
    store: StoreArg,
    events: Annotated[
        Path,
        typer.Argument(help="JSON Lines file of events, or - for stdin.", show_default=False),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Append events from a JSON Lines file, all or nothing (needs consent P1 and P5).

    One JSON object a line, for example:

    {"item": "42", "event_type": "click", "timestamp": 1714560000, "context": {"hour": 21}}

    Event types: view, click, add_to_cart, purchase, rating (needs a value), dwell (seconds).

    Timestamps: epoch seconds, or ISO 8601 with an offset ("2024-05-01T12:00:00Z").

    A bad line stops the ingest, names the file and line, and stores nothing.

    Example: fedpers client ingest device.db events.jsonl
    """
    with _edge(), _open_store(store) as opened:
        from fedpers.client.store import parse_events_jsonl, read_events_jsonl

        catalogue = set(opened.catalogue())
        if str(events) == "-":
            parsed = parse_events_jsonl(sys.stdin.read().splitlines(), catalogue, "<stdin>")
        else:
            parsed = read_events_jsonl(events, catalogue)
        added = opened.append_many(parsed)
        total = opened.count()
        if as_json:
            _emit_json({"ingested": added, "events": total, "store": str(store)})
        else:
            typer.echo(f"ingested {added} events into {store} ({total} in total)")


# -- consent -----------------------------------------------------------------------------


def _show_state(state: ConsentState, as_json: bool, heading: str) -> None:
    if as_json:
        _emit_json(state.to_dict())
    else:
        typer.echo(heading)
        typer.echo("\n".join(_consent_lines(state)))


PurposesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Purposes: 1, P1 or store_access (see above).", show_default=False),
]


@consent_app.command("grant")
def consent_grant_command(
    store: StoreArg, purposes: PurposesArg = None, as_json: JsonOpt = False
) -> None:
    """Grant purposes; e.g. `grant device.db 1 5 6` to keep events and personalise."""
    with _edge(), _open_store(store) as opened:
        named = parse_purposes(purposes or [])
        if not named:
            raise DataError("name at least one purpose to grant, e.g. 1 5")
        state = _consent(opened).grant(*sorted(named))
        _show_state(state, as_json, f"granted {' '.join(p.label for p in sorted(named))}")


@consent_app.command("withdraw")
def consent_withdraw_command(
    store: StoreArg,
    purposes: PurposesArg = None,
    withdraw_all: Annotated[
        bool, typer.Option("--all", help="Withdraw every purpose at once.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw purposes; effective immediately. `--all` withdraws everything at once."""
    with _edge(), _open_store(store) as opened:
        named = parse_purposes(purposes or [])
        manager = _consent(opened)
        if withdraw_all:
            if named:
                raise DataError("give purposes or --all, not both")
            state = manager.withdraw_all()
            heading = "withdrew every purpose"
        else:
            if not named:
                raise DataError("name at least one purpose to withdraw, or use --all")
            state = manager.withdraw(*sorted(named))
            heading = f"withdrew {' '.join(p.label for p in sorted(named))}"
        _show_state(state, as_json, heading)


@consent_app.command("show")
def consent_show_command(
    store: StoreArg,
    log: Annotated[bool, typer.Option("--log", help="Also list every consent change.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what is granted, the GPC signal, and with --log every change."""
    with _edge(), _open_store(store) as opened:
        manager = _consent(opened)
        state = manager.state
        entries = manager.log() if log else []
        if as_json:
            out: dict[str, Any] = state.to_dict()
            if log:
                out["log"] = [entry.to_dict() for entry in entries]
            _emit_json(out)
            return
        typer.echo(f"consent in {store}:")
        typer.echo("\n".join(_consent_lines(state)))
        for entry in entries:
            named = " ".join(f"P{int(p)}" for p in sorted(entry.purposes))
            typer.echo(f"  {_when(entry.at)}  {entry.action:<12} {named}")


@client_app.command("gpc")
def gpc_command(
    store: StoreArg,
    switch: Annotated[_Switch, typer.Argument(help="on or off.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Set the Global Privacy Control signal (an opt-out of sharing) on or off.

    While on, the device sends nothing derived from your behaviour (no training updates).

    On-device personalisation is not affected.

    Example: fedpers client gpc device.db on
    """
    with _edge(), _open_store(store) as opened:
        state = _consent(opened).set_gpc(switch is _Switch.ON)
        _show_state(state, as_json, f"GPC {switch.value}")


# -- owner's rights ----------------------------------------------------------------------


@client_app.command("export")
def export_command(
    store: StoreArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write to this file (mode 0600) instead of stdout."),
    ] = None,
) -> None:
    """Export everything the store holds about you as JSON (GDPR Art. 20).

    Events, consent and its log, your private profile and your privacy ledger.

    The export holds raw personal data: --out writes it readable by you only.

    Example: fedpers client export device.db --out my-data.json
    """
    with _edge(), _open_store(store) as opened:
        document = json.dumps(opened.export(), indent=2, sort_keys=True, allow_nan=False)
        if out is None:
            typer.echo(document)
            return
        try:
            with private_file(out, "w") as handle:
                handle.write(document + "\n")
        except OSError as exc:
            raise DataError(f"{out}: cannot write the export: {exc}") from None
        typer.echo(f"exported {opened.count()} events to {out}", err=True)


@client_app.command("erase")
def erase_command(
    store: StoreArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase everything about you (GDPR Art. 17): events, consent, profile, ledger.

    The file is vacuumed afterwards so that no trace of an event remains in it.

    With consent gone, the device takes part in nothing until you grant it again.

    Example: fedpers client erase device.db --yes
    """
    with _edge():
        if not yes:
            raise DataError("erase cannot be undone; add --yes to confirm")
        with _open_store(store) as opened:
            counts = opened.erase()
        if as_json:
            _emit_json({"erased": counts, "store": str(store)})
        else:
            summary = ", ".join(f"{n} {table}" for table, n in counts.items())
            typer.echo(f"erased {store}: {summary}")


# -- inspection --------------------------------------------------------------------------


@client_app.command("ledger")
def ledger_command(store: StoreArg, as_json: JsonOpt = False) -> None:
    """Show the device's privacy ledger: epsilon spent by on-device DP-SGD, per round.

    Example: fedpers client ledger device.db --json
    """
    with _edge(), _open_store(store) as opened:
        entries = opened.ledger()
        spent = opened.epsilon_spent()
    if as_json:
        _emit_json({"epsilon_spent": spent, "rounds": [e.to_dict() for e in entries]})
        return
    if not entries:
        typer.echo("no rounds recorded: epsilon spent 0")
        return
    typer.echo(f"{'round':>6} {'epsilon':>9} {'delta':>9} {'noise':>7} {'q':>7} {'steps':>6}  acct")
    for e in entries:
        typer.echo(
            f"{e.round:>6} {e.epsilon:>9.4f} {e.delta:>9.2e} {e.noise_multiplier:>7.3f} "
            f"{e.sample_rate:>7.4f} {e.steps:>6}  {e.accountant}"
        )
    typer.echo(f"epsilon spent: {spent:.4f}")


@client_app.command("info")
def info_command(store: StoreArg, as_json: JsonOpt = False) -> None:
    """Summarise the store: sizes, schema, consent, profile, ledger (no event contents).

    Example: fedpers client info device.db
    """
    with _edge(), _open_store(store) as opened:
        info = opened.info()
    if as_json:
        _emit_json(info)
        return
    typer.echo(f"store {info['path']} (schema v{info['schema_version']}, {info['journal_mode']})")
    typer.echo(f"  size: {info['file_bytes']} bytes, catalogue: {info['catalogue_size']} items")
    typer.echo(
        f"  events: {info['events']} (first {_when(info['first_event_at'])}, "
        f"last {_when(info['last_event_at'])})"
    )
    typer.echo(f"  private profile: {'yes' if info['has_user_vector'] else 'none'}")
    typer.echo(
        f"  privacy ledger: {info['ledger_rounds']} rounds, epsilon spent "
        f"{info['epsilon_spent']:.4f}"
    )
    typer.echo("consent:")
    state = ConsentState(
        frozenset(Purpose(p) for p in info["consent"]["granted"]),
        info["consent"]["gpc"],
        info["consent"]["updated_at"],
    )
    typer.echo("\n".join(_consent_lines(state)))


@client_app.command("check")
def check_command(store: StoreArg, as_json: JsonOpt = False) -> None:
    """Check the store file's integrity; exit 2 naming the file when it is damaged.

    Example: fedpers client check device.db
    """
    with _edge(), _open_store(store) as opened:
        opened.check_integrity()
    if as_json:
        _emit_json({"store": str(store), "ok": True})
    else:
        typer.echo(f"{store}: ok")


# -- recommendations ---------------------------------------------------------------------


def _parse_context(pairs: list[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--context takes KEY=VALUE, got {pair!r}")
        context[key] = value
    return context


def _latest_model_file(path: Path) -> Path:
    """``path`` itself, or the latest ``round-*.npz`` of a run directory or models folder."""
    if not path.is_dir():
        return path
    folder = path / "models" if (path / "models").is_dir() else path
    rounds = sorted(folder.glob("round-*.npz"))
    if not rounds:
        raise DataError(f"{path}: no published global model (round-*.npz) found")
    return rounds[-1]


@client_app.command("recommend")
def recommend_command(
    store: StoreArg,
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help=(
                "The global model file (.npz) published by the coordinator's registry, or a "
                "run directory / its models/ folder (the latest round is used)."
            ),
            show_default=False,
        ),
    ],
    k: Annotated[int, typer.Option("-k", "--top", help="How many items.")] = 10,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            "-c",
            help="Request context KEY=VALUE (repeatable); used only for the P11 fallback.",
        ),
    ] = None,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="Keep items already in your history.")
    ] = False,
    diversity: Annotated[
        float, typer.Option(help="0 = pure relevance, 1 = maximal diversity (MMR).")
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Recommend items from the global model plus your private profile, as consent allows.

    With P1 + P6 the ranking uses your private profile (built on this device from your
    events; P5 is needed to build it). Otherwise, with P11, it uses public popularity and
    the request context only; otherwise public popularity alone. Each item comes with a
    short explanation. Nothing is sent anywhere.

    Example: fedpers client recommend device.db --model runs/ml100k-eps8 -k 5
    """
    from fedpers.client.global_model import GlobalModel
    from fedpers.client.personalizer import Personalizer

    with _edge(), _open_store(store) as opened:
        global_model = GlobalModel.load(_latest_model_file(model))
        if opened.catalogue() != global_model.item_ids:
            typer.echo("note: updating the store's catalogue to the model's", err=True)
            opened.set_catalogue(global_model.item_ids)
        recs = Personalizer(opened, global_model).recommend(
            k,
            _parse_context(context or []),
            exclude_seen=not include_seen,
            diversity=diversity,
        )
        if as_json:
            _emit_json({"store": str(store), "items": [r.to_dict() for r in recs]})
            return
        for rank, rec in enumerate(recs, start=1):
            typer.echo(
                f"{rank:>3}. {rec.item:<12} {rec.score:8.3f}  [{rec.basis}] {rec.explanation}"
            )
