"""`fedpers keys` through typer's CliRunner."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from fedpers.privacy.secagg import SECRET_CONTEXT_FILE, load_secret_context
from fedpers.simulation.cli.keys import keys_app

runner = CliRunner()


def test_help_teaches() -> None:
    result = runner.invoke(keys_app, ["--help"])
    assert result.exit_code == 0
    for word in ("generate", "rotate", "show", "public.ctx", "secret.ctx", "0600"):
        assert word in result.output
    gen = runner.invoke(keys_app, ["generate", "--help"])
    assert "--poly-modulus-degree" in gen.output
    assert "--coeff-mod-bit-sizes" in gen.output


def test_generate_show_rotate(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    gen = runner.invoke(keys_app, ["generate", str(directory), "--json"])
    assert gen.exit_code == 0, gen.output
    created = json.loads(gen.stdout)
    assert created["generation"] == 1
    assert created["security_bits"] == 128
    assert created["params"]["coeff_mod_bit_sizes"] == [60, 40, 60]
    assert stat.S_IMODE((directory / SECRET_CONTEXT_FILE).stat().st_mode) == 0o600

    shown = runner.invoke(keys_app, ["show", str(directory), "--json"])
    assert shown.exit_code == 0
    assert json.loads(shown.stdout)["key_id"] == created["key_id"]

    text = runner.invoke(keys_app, ["show", str(directory)])
    assert created["key_id"] in text.output
    assert "key holder only" in text.output
    # never prints secret material
    secret = load_secret_context(directory)
    assert secret[:64].hex() not in text.output
    assert len(shown.stdout) < 2000 and len(text.output) < 2000

    again = runner.invoke(keys_app, ["generate", str(directory)])
    assert again.exit_code == 2
    assert "already holds a key set" in again.output

    rot = runner.invoke(keys_app, ["rotate", str(directory), "--json"])
    assert rot.exit_code == 0, rot.output
    rotated = json.loads(rot.stdout)
    assert rotated["generation"] == 2
    assert rotated["previous_key_id"] == created["key_id"]
    gone = runner.invoke(keys_app, ["rotate", str(directory), "--remove-previous", "--json"])
    assert json.loads(gone.stdout)["previous_key_id"] is None


def test_options_and_errors(tmp_path: Path) -> None:
    compact = runner.invoke(
        keys_app, ["generate", str(tmp_path / "c"), "--coeff-mod-bit-sizes", "60,60", "--json"]
    )
    assert compact.exit_code == 0, compact.output
    assert json.loads(compact.stdout)["security_bits"] == 192
    insecure = runner.invoke(
        keys_app,
        [
            "generate",
            str(tmp_path / "i"),
            "--poly-modulus-degree",
            "4096",
            "--coeff-mod-bit-sizes",
            "60,40,40,60",
        ],
    )
    assert insecure.exit_code == 2
    assert "128-bit security" in insecure.output
    bad = runner.invoke(keys_app, ["generate", str(tmp_path / "b"), "--coeff-mod-bit-sizes", "x"])
    assert bad.exit_code != 0
    missing = runner.invoke(keys_app, ["show", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert "error:" in missing.output
    loose = tmp_path / "c" / SECRET_CONTEXT_FILE
    loose.chmod(0o644)
    assert runner.invoke(keys_app, ["show", str(tmp_path / "c")]).exit_code == 2
