"""``fedpers serve``: the consent-aware personalization API, its keys and its ledger.

Register with ``app.add_typer(serve_app, name="serve")`` on the root typer app. This
module imports only typer and the standard library at import time; FastAPI, uvicorn and
the API package are imported inside the commands, so ``fedpers --help`` stays light.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from fedpers.privacy.errors import ConfigError
from fedpers.server.cli.api_database import api_database, check_run
from fedpers.server.cli.verify_ledger import verify_ledger_command

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["DEMO_KEY_NAME", "DEMO_TENANT", "serve_app"]

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "demo page (fedpers serve --demo)"
#: What --log-level accepts: ``ApiSettings.log_level``'s values (kept here so that
#: ``fedpers --help`` need not import the settings; a test checks they agree).
LOG_LEVELS = ("debug", "info", "warning", "error")

serve_app = typer.Typer(
    help=(
        "Serve consent-aware recommendations from a run's model registry over HTTP.\n\n"
        "Starts uvicorn on 127.0.0.1:8080 (Flower's SuperLink takes 8000) with the run's "
        "latest model, hot-reloading new registry versions. State (keys, consent, ledger, "
        "experiments) lives in RUN_DIR/api.db unless --db says otherwise; the consent "
        "ledger's HMAC key is created beside it (mode 0600) on first start.\n\n"
        "  $ fedpers serve --run runs/ml100k-eps8 --demo\n"
        "  $ fedpers serve --run runs/ml100k-eps8 --workers 4 --port 9000\n"
        "  $ fedpers serve keys create --run runs/ml100k-eps8 --tenant shop-a\n"
        "  $ fedpers serve keys list --run runs/ml100k-eps8 --json\n\n"
        "See docs/api.md for the routes and a curl session."
    ),
    invoke_without_command=True,
)

keys_app = typer.Typer(
    help=(
        "API keys per tenant: create (the key is shown once and stored only as a "
        "SHA-256), list, revoke.\n\n"
        "  $ fedpers serve keys create --run RUN_DIR --tenant shop-a --scope serve\n"
        "  $ fedpers serve keys revoke --run RUN_DIR KEY_ID"
    ),
    no_args_is_help=True,
)
serve_app.add_typer(keys_app, name="keys")
serve_app.command("verify-ledger")(verify_ledger_command)

RunOpt = Annotated[
    Path | None,
    typer.Option(
        "--run", help="Run directory whose registry is served (holds run.db).", show_default=False
    ),
]
DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db", help="The API's SQLite database [default: RUN_DIR/api.db].", show_default=False
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def _open(path: Path) -> sqlite_utils.Database:
    from fedpers.server.api.db import open_api_db

    return open_api_db(path)


def _ensure_ledger_key(db_path: Path) -> None:
    from fedpers.server.api.settings import create_ledger_key, ledger_key_path

    key_file = ledger_key_path(db_path)
    if not key_file.exists() and _ledger_entries(db_path):
        raise ConfigError(
            f"{db_path} holds consent ledger entries but its HMAC key {key_file} is "
            "missing: restore the key file (a new key could not verify the ledger)"
        )
    if create_ledger_key(key_file):
        typer.echo(
            f"created the consent ledger's HMAC key {key_file} (mode 0600); keep it with "
            "the database: without it the ledger cannot be verified",
            err=True,
        )


def _ledger_entries(db_path: Path) -> int:
    """How many ledger entries an existing database holds (0 when none or no ledger)."""
    import sqlite3

    if not db_path.is_file():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM consent_ledger").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0
    finally:
        conn.close()


def _demo_key(db: sqlite_utils.Database) -> str:
    """A fresh serve-scope key of the demo tenant; earlier demo keys are revoked."""
    from fedpers.server.api.auth import create_api_key, list_api_keys, revoke_api_key

    for key in list_api_keys(db, DEMO_TENANT):
        if key.name == DEMO_KEY_NAME and key.revoked_at is None:
            revoke_api_key(db, key.key_id, DEMO_TENANT)
    _, secret = create_api_key(db, DEMO_TENANT, ["serve"], name=DEMO_KEY_NAME)
    return secret


@serve_app.callback()
def serve(
    ctx: typer.Context,
    run: RunOpt = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="uvicorn worker processes.")
    ] = 1,
    db: DbOpt = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Serve the web demo: a serve key of tenant 'demo' for the page."
        ),
    ] = False,
    reload_interval: Annotated[
        float,
        typer.Option(
            "--reload-interval",
            min=0.0,
            envvar="FEDPERS_API_RELOAD_INTERVAL_S",
            help="Seconds between model registry polls (0: never).",
        ),
    ] = 2.0,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            envvar="FEDPERS_API_LOG_LEVEL",
            click_type=click.Choice(LOG_LEVELS, case_sensitive=False),
            help="How much the service logs (info: one JSON object per request).",
        ),
    ] = "info",
) -> None:
    """Start the API (uvicorn) on a run directory; see `fedpers serve --help`."""
    if ctx.invoked_subcommand is not None:
        return
    if run is None:
        raise typer.BadParameter("give the run directory to serve", param_hint="--run")
    check_run(run)
    db_path = api_database(run, db)
    _ensure_ledger_key(db_path)
    database = _open(db_path)
    env: dict[str, str] = {
        "FEDPERS_API_RUN_DIR": str(run.resolve()),
        "FEDPERS_API_DB_PATH": str(db_path.resolve()),
        "FEDPERS_API_RELOAD_INTERVAL_S": str(reload_interval),
        "FEDPERS_API_LOG_LEVEL": log_level,
    }
    if demo:
        env["FEDPERS_API_DEMO_TENANT"] = DEMO_TENANT
        env["FEDPERS_API_DEMO_API_KEY"] = _demo_key(database)
    database.conn.close()
    _run_uvicorn(env, host=host, port=port, workers=workers, log_level=log_level)


def _run_uvicorn(
    env: dict[str, str], *, host: str, port: int, workers: int, log_level: str
) -> None:
    metrics_dir = tempfile.mkdtemp(prefix="fedpers-api-metrics-") if workers > 1 else None
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        env["FEDPERS_API_METRICS_DIR"] = metrics_dir
    os.environ.update(env)
    try:
        from fedpers.server.api.settings import load_settings

        load_settings.cache_clear()
        settings = load_settings()  # invalid values fail here, once, not in every worker
        settings.ledger_key()
        import uvicorn

        from fedpers.server.api.observability import configure_logging

        configure_logging(log_level, settings.log_format)
        typer.echo(
            f"serving {settings.run_dir} on http://{host}:{port} ({workers} worker"
            f"{'s' if workers > 1 else ''}); OpenAPI at http://{host}:{port}/docs",
            err=True,
        )
        uvicorn.run(
            "fedpers.server.api.main:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=None,
            log_level=log_level,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[
        str, typer.Option("--tenant", help="Tenant the key belongs to.", show_default=False)
    ],
    run: RunOpt = None,
    db: DbOpt = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="serve and/or admin (repeat the option) [default: serve]."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A label for people.")] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", min=0.0, help="This key's requests/s limit [default: the service's]."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from fedpers.server.api.auth import create_api_key

    database = _open(api_database(run, db))
    key, secret = create_api_key(database, tenant, scope or ["serve"], name=name, rate_per_s=rate)
    if as_json:
        typer.echo(json.dumps({**key.public(), "key": secret}, sort_keys=True))
        return
    typer.echo(secret)
    typer.echo(
        f"created key {key.key_id} of tenant {key.tenant} "
        f"(scopes {', '.join(sorted(key.scopes))}); it is shown only now: store it",
        err=True,
    )


@keys_app.command("list")
def keys_list(
    run: RunOpt = None,
    db: DbOpt = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (ids, tenants, scopes, created/revoked; never a secret)."""
    from fedpers.server.api.auth import list_api_keys

    keys = [k.public() for k in list_api_keys(_open(api_database(run, db)), tenant)]
    if as_json:
        typer.echo(json.dumps({"keys": keys}, sort_keys=True))
        return
    _print_keys(keys)


def _print_keys(keys: list[dict[str, Any]]) -> None:
    from datetime import UTC, datetime

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")

    if not keys:
        typer.echo("no keys (create one with `fedpers serve keys create`)")
        return
    typer.echo(f"{'key_id':<14}{'tenant':<18}{'scopes':<14}{'created':<18}{'revoked':<18}name")
    for k in keys:
        typer.echo(
            f"{k['key_id']:<14}{k['tenant']:<18}{','.join(k['scopes']):<14}"
            f"{when(k['created_at']):<18}{when(k['revoked_at']):<18}{k['name'] or ''}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(help="The key's id (see `keys list`).", show_default=False)
    ],
    run: RunOpt = None,
    db: DbOpt = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Refuse unless the key is this tenant's.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: every request with it answers 401 from now on."""
    from fedpers.server.api.auth import revoke_api_key

    key = revoke_api_key(_open(api_database(run, db)), key_id, tenant)
    if as_json:
        typer.echo(json.dumps(key.public(), sort_keys=True))
        return
    typer.echo(f"revoked key {key.key_id} of tenant {key.tenant}")
