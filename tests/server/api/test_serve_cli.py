"""``fedpers serve keys create|list|revoke`` and the one-line errors of ``fedpers serve``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpers.server.api.auth import authenticate
from fedpers.server.api.db import open_api_db
from fedpers.simulation.cli.app import app

runner = CliRunner()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from fedpers.simulation.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_keys_create_list_revoke(tiny_run: Path) -> None:
    r = runner.invoke(
        app,
        ["serve", "keys", "create", "--run", str(tiny_run), "--tenant", "shop-a", "--json",
         "--scope", "serve", "--scope", "admin", "--name", "ops"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    secret = created["key"]
    assert created["tenant"] == "shop-a" and created["scopes"] == ["admin", "serve"]
    db = open_api_db(tiny_run / "api.db")
    assert authenticate(db, secret).key_id == created["key_id"]

    r = runner.invoke(app, ["serve", "keys", "create", "--run", str(tiny_run), "--tenant", "b"])
    assert r.exit_code == 0 and r.stdout.strip().startswith("fpk_")  # the key alone on stdout

    r = runner.invoke(app, ["serve", "keys", "list", "--run", str(tiny_run), "--json"])
    listed = json.loads(r.stdout)["keys"]
    assert {k["tenant"] for k in listed} == {"shop-a", "b"}
    assert secret not in r.stdout and all("key" not in k for k in listed)
    r = runner.invoke(app, ["serve", "keys", "list", "--run", str(tiny_run), "--tenant", "b"])
    assert r.exit_code == 0 and "shop-a" not in r.stdout and " b " in r.stdout

    r = runner.invoke(
        app, ["serve", "keys", "revoke", created["key_id"], "--db", str(tiny_run / "api.db"),
              "--json"],
    )  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["revoked_at"] is not None
    r = runner.invoke(app, ["serve", "keys", "list", "--run", str(tiny_run), "--json"])
    revoked = [k for k in json.loads(r.stdout)["keys"] if k["key_id"] == created["key_id"]]
    assert revoked[0]["revoked_at"] is not None


def test_cli_errors_are_one_line_exit_2(tiny_run: Path, tmp_path: Path) -> None:
    cases = [
        (["serve"], "--run"),
        (["serve", "--run", str(tmp_path)], "not a run directory"),
        (["serve", "--run", str(tiny_run), "--port", "0"], "--port"),
        (["serve", "--run", str(tiny_run), "--log-level", "loud"], "--log-level"),
        (["serve", "--run", str(tiny_run), "--reload-interval", "-1"], "--reload-interval"),
        (["serve", "keys", "create", "--tenant", "x"], "give --run RUN_DIR or --db PATH"),
        (["serve", "keys", "create", "--run", str(tiny_run), "--tenant", "Bad Name"], "tenant"),
        (["serve", "keys", "create", "--run", str(tiny_run), "--tenant", "t", "--scope", "root"],
         "scopes"),
        (["serve", "keys", "revoke", "000000000000", "--run", str(tiny_run)], "no API key"),
    ]  # fmt: skip
    for args, words in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (
            args,
            r.stderr,
        )


def test_serve_reads_its_log_level_and_reload_interval_from_the_environment(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FEDPERS_API_*`` settings reach the service unless the option is given."""
    from typing import get_args

    from fedpers.server.api.settings import ApiSettings
    from fedpers.server.cli import serve as serve_cli

    # The CLI keeps its own list (its --help must not import the settings): the same one.
    assert get_args(ApiSettings.model_fields["log_level"].annotation) == serve_cli.LOG_LEVELS

    started: list[tuple[dict[str, str], str]] = []
    monkeypatch.setattr(
        serve_cli, "_run_uvicorn", lambda env, **kw: started.append((env, kw["log_level"]))
    )
    environment = {"FEDPERS_API_LOG_LEVEL": "warning", "FEDPERS_API_RELOAD_INTERVAL_S": "7.5"}
    r = runner.invoke(app, ["serve", "--run", str(tiny_run)], env=environment)
    assert r.exit_code == 0, r.output
    env, level = started[-1]
    assert level == "warning" and env["FEDPERS_API_LOG_LEVEL"] == "warning"
    assert env["FEDPERS_API_RELOAD_INTERVAL_S"] == "7.5"
    r = runner.invoke(
        app, ["serve", "--run", str(tiny_run), "--log-level", "ERROR"], env=environment
    )
    assert r.exit_code == 0, r.output
    assert started[-1][1] == "error"


def test_serve_help_has_examples_and_fedpers_help_stays_light() -> None:
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0
    for words in ("--run", "--workers", "--demo", "$ fedpers serve keys create", "8080"):
        assert words in r.stdout
    code = (
        "import sys; import fedpers.simulation.cli.app; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'fedpers.server.api.main') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_each_demo_start_revokes_the_previous_demo_key(tiny_run: Path) -> None:
    from fedpers.server.api.auth import list_api_keys
    from fedpers.server.cli.serve import DEMO_TENANT, _demo_key

    db = open_api_db(tiny_run / "api.db")
    first = _demo_key(db)
    second = _demo_key(db)
    assert first != second and authenticate(db, second).tenant == DEMO_TENANT
    assert authenticate(db, second).scopes == frozenset({"serve"})
    keys = list_api_keys(db, DEMO_TENANT)
    assert [k.revoked_at is None for k in keys] == [False, True]


def test_serve_refuses_a_new_ledger_key_for_an_existing_ledger(tiny_run: Path) -> None:
    from fedpers.server.api import consent_store
    from fedpers.server.api.settings import ApiSettings, create_ledger_key

    settings = ApiSettings(run_dir=tiny_run)
    create_ledger_key(settings.ledger_key_file)
    db = open_api_db(settings.database_path)
    consent_store.change_consent(
        db, settings.ledger_key(), "shop-a", "u1", "grant", [1], policy_version="v1", source="t"
    )
    db.conn.close()
    settings.ledger_key_file.unlink()
    r = _cli("serve", "--run", str(tiny_run), "--port", "1")
    assert r.returncode == 2 and "holds consent ledger entries" in r.stderr, r.stderr
    assert not settings.ledger_key_file.exists()
