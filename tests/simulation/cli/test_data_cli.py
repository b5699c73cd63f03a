"""``fedpers data``: fetch, info and synth through typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedpers.privacy.errors import ConfigError, DataError
from fedpers.simulation.cli.data import data_app
from fedpers.simulation.data import read_interaction_log
from fedpers.simulation.data.movielens import ML100K_FILES, movielens_100k_dir

runner = CliRunner()


def test_fetch_prints_the_cache_directory() -> None:
    result = runner.invoke(data_app, ["fetch", "ml-100k"])
    assert result.exit_code == 0, result.output
    directory = Path(result.stdout.strip())
    assert directory == movielens_100k_dir()
    assert sorted(p.name for p in directory.iterdir()) == sorted(ML100K_FILES)


def test_fetch_json_with_cache_dir(tmp_path: Path) -> None:
    result = runner.invoke(data_app, ["fetch", "ml-100k", "--cache-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["path"] == str(tmp_path / "ml-100k")
    assert payload["sha256"] == ML100K_FILES
    assert all(Path(p).is_file() for p in payload["files"].values())


def test_fetch_refuses_other_datasets() -> None:
    result = runner.invoke(data_app, ["fetch", "synthetic"])
    assert result.exit_code == 2
    assert "'synthetic' cannot be fetched" in result.stderr


def test_info_ml100k_json() -> None:
    result = runner.invoke(data_app, ["info", "ml-100k", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["users"], payload["items"], payload["interactions"]) == (943, 1682, 100_000)
    assert payload["density"] == pytest.approx(100_000 / (943 * 1682))
    assert payload["time"]["first"] == "1997-09-20T03:05:10Z"
    assert payload["time"]["last"] == "1998-04-22T23:10:38Z"
    assert set(payload["user_attributes"]) == {"gender", "age", "age_band", "occupation"}
    assert payload["user_attributes"]["gender"]["top"] == {"M": 670, "F": 273}
    assert payload["per_user"]["min"] == 20.0


def test_info_table_for_a_log(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    log.write_text("user,item,event_type\na,x,click\nb,x,view\nb,y,click\n")
    result = runner.invoke(data_app, ["info", str(log)])
    assert result.exit_code == 0, result.output
    assert "interactions" in result.stdout and "click (2)" in result.stdout
    assert "75.0000%" in result.stdout  # 3 interactions over 2 users x 2 items


def test_info_synthetic_seed_changes_data() -> None:
    a = json.loads(runner.invoke(data_app, ["info", "synthetic", "--json", "--seed", "1"]).stdout)
    b = json.loads(runner.invoke(data_app, ["info", "synthetic", "--json", "--seed", "2"]).stdout)
    assert a["interactions"] == b["interactions"] == 20_000
    assert a["per_item"] != b["per_item"]


def test_info_malformed_log_raises_data_error(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    log.write_text("user,item,timestamp\na,b,yesterday\n")
    result = runner.invoke(data_app, ["info", str(log)])
    assert isinstance(result.exception, DataError)
    assert "events.csv:2: column 'timestamp'" in str(result.exception)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_synth_writes_a_readable_log(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"synth{suffix}"
    args = ["synth", "--users", "50", "--items", "40", "--events-per-user", "4", "--seed", "5"]
    result = runner.invoke(data_app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["interactions"] == 200 and payload["path"] == str(out)
    data = read_interaction_log(out)
    assert (data.n_users, data.n_interactions) == (50, 200)
    first = out.read_bytes()
    again = runner.invoke(data_app, [*args, "--out", str(out)])
    assert again.exit_code == 0 and "wrote 200 interactions" in again.stdout
    assert out.read_bytes() == first


def test_synth_rejects_bad_extension_and_bounds(tmp_path: Path) -> None:
    bad_ext = runner.invoke(data_app, ["synth", "--out", str(tmp_path / "x.parquet")])
    assert isinstance(bad_ext.exception, DataError)
    too_many = runner.invoke(
        data_app, ["synth", "--users", "2000000", "--out", str(tmp_path / "x.csv")]
    )
    assert isinstance(too_many.exception, ConfigError)
    assert list(tmp_path.iterdir()) == []


def test_console_script_turns_errors_into_one_line(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    log.write_text("user,item\na,b\n,c\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fedpers.simulation.cli import main; main()",
            "data",
            "info",
            str(log),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"error: {log}:3: column 'user': empty value"


def test_help_teaches_with_examples() -> None:
    for command in ("fetch", "info", "synth"):
        result = runner.invoke(data_app, [command, "--help"])
        assert result.exit_code == 0
        assert f"$ fedpers data {command}" in result.stdout
