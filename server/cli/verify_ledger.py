"""``fedpers serve verify-ledger``: recompute the consent ledger's hash chains.

Registered on ``serve_app`` as ``verify-ledger``. The database is opened read-only (no
migration, no write), the ledger's HMAC key is read from beside it (fail closed, as the
service does) and :func:`fedpers.server.api.ledger.verify_ledger` recomputes every
tenant's chain. Exit code 0 when every chain verifies, 1 when one breaks (the output
names the tenant, the ``seq`` and what is wrong there), 2 for an error (no database, no
key). Only typer and the standard library are imported at module import time.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedpers.privacy.errors import ConfigError
from fedpers.server.cli.api_database import api_database

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["EXIT_BROKEN", "open_read_only", "verify_ledger_command"]

EXIT_BROKEN = 1
"""The exit code when a chain does not verify."""


def open_read_only(path: Path) -> sqlite_utils.Database:
    """Open the API database without writing to it.

    Raises:
        ConfigError: no such file, or it holds no consent ledger.
    """
    import sqlite_utils

    if not path.is_file():
        raise ConfigError(f"{path}: no API database (`fedpers serve` creates it)")
    conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    db = sqlite_utils.Database(conn)
    if "consent_ledger" not in db.table_names():
        conn.close()
        raise ConfigError(f"{path}: not a fedpers API database (no consent_ledger table)")
    return db


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_human(report: dict[str, Any], path: Path) -> None:
    chains = report["chains"]
    n = report["entries"]
    entries = f"{n} {'entry' if n == 1 else 'entries'}"
    shredded = sum(report["shredded"].values())
    if report["ok"]:
        typer.echo(
            f"ledger OK: {entries} in {_plural(len(chains), 'chain')} "
            f"({shredded} shredded by erasure) in {path}"
        )
        return
    broken = len(report["breaks"])
    typer.echo(
        f"ledger BROKEN: {broken} of {_plural(len(chains), 'chain')} "
        f"break{'s' if broken == 1 else ''} in {path} ({entries} verified before "
        f"{'the break' if broken == 1 else 'the breaks'})"
    )
    for b in report["breaks"]:
        typer.echo(f"  tenant {b['tenant']}: breaks at seq {b['seq']}: {b['problem']}")


def verify_ledger_command(
    run: Annotated[
        Path | None,
        typer.Option("--run", help="Run directory (its api.db is checked).", show_default=False),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db", help="The API database (default: RUN_DIR/api.db).", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")
    ] = False,
) -> None:
    """Check the consent ledger's hash chains; say where one breaks (exit 1).

    The HMAC key is read from the file beside the database. Entries shredded by an
    erasure still verify.

      $ fedpers serve verify-ledger --run runs/ml100k-eps8
      $ fedpers serve verify-ledger --db /var/lib/fedpers/api.db --json
    """
    from fedpers.server.api.ledger import verify_ledger
    from fedpers.server.api.settings import ApiSettings

    path = api_database(run, db, check=False)
    database = open_read_only(path)
    try:
        key = ApiSettings(run_dir=path.parent, db_path=path).ledger_key()
        report = verify_ledger(database, key).to_dict()
    finally:
        database.conn.close()
    if as_json:
        typer.echo(json.dumps({**report, "db": str(path)}, sort_keys=True))
    else:
        _print_human(report, path)
    if not report["ok"]:
        raise typer.Exit(EXIT_BROKEN)
