"""RunDirectory: the names of a run's files, and clear errors for a folder that is no run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedpers.privacy.errors import DataError, StoreError
from fedpers.server.checkpoint import Checkpoint, save_checkpoint
from fedpers.server.run_dir import RunDirectory
from fedpers.server.rundb import RunDB


def test_names_every_file_and_folder_of_a_run(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    named = {
        run.config: "config.json",
        run.run_db: "run.db",
        run.metrics: "metrics.jsonl",
        run.checkpoint: "checkpoint.npz",
        run.models: "models",
        run.model_file(7): "models/round-0007.npz",
        run.keys: "keys",
        run.devices.root: "devices",
        run.devices.catalogue: "devices/catalogue.npz",
        run.api_db: "api.db",
        run.context_popularity: "context_popularity.npz",
        run.report_json: "report.json",
        run.report_html: "report.html",
        run.deployment_plan: "deployment.json",
        run.tls: "tls",
        run.auth: "auth",
        run.flwr: "flwr",
        run.logs: "logs",
        run.ray_owner: "ray_owner.json",
    }
    for path, name in named.items():
        assert path.relative_to(tmp_path).as_posix() == name
    assert not any(tmp_path.iterdir()), "naming a file must not create it"


def test_writers_use_its_names(tmp_path: Path) -> None:
    with RunDB.open(tmp_path / "r") as db:
        db.write_config({"rounds": 1})
    run = RunDirectory.open(tmp_path / "r")
    assert run.run_db.is_file() and run.config.is_file()
    assert run.read_config() == {"rounds": 1}
    assert save_checkpoint(run.root, Checkpoint(0, [], {})) == run.checkpoint


def test_create_makes_the_folder_and_refuses_a_file(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "a" / "b")
    assert run.root.is_dir() and not run.holds_run()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        RunDirectory.create(tmp_path / "file")


def test_open_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such run directory"):
        RunDirectory.open(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    assert RunDirectory(tmp_path).holds_run()
    with pytest.raises(StoreError, match=r"not a run directory \(no run.db\)"):
        RunDirectory.open(tmp_path)


def test_read_config_missing_is_empty_and_bad_json_is_a_data_error(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.read_config() == {}
    run.config.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        run.read_config()
    run.config.write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="not a JSON object"):
        run.read_config()


def test_find_model_follows_a_moved_run(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "moved")
    run.models.mkdir()
    run.model_file(2).write_bytes(b"npz")
    assert run.find_model("/elsewhere/old/models/round-0002.npz") == run.model_file(2)
    assert run.find_model("models/round-0002.npz") == run.model_file(2)
    assert run.find_model("/nowhere/round-0009.npz") == Path("/nowhere/round-0009.npz")


def test_devices_folder_resolution(tmp_path: Path) -> None:
    run = RunDirectory.create(tmp_path / "r")
    assert run.find_devices(None) is None
    run.devices.root.mkdir()
    assert run.find_devices(None) == run.devices
    assert run.find_devices(str(tmp_path / "gone")) == run.devices
    (run.root / "pop").mkdir()
    found = run.find_devices("pop")
    assert found is not None and found.root == run.root / "pop"
    roots = [f.root for f in run.devices_candidates(str(run.devices.root))]
    assert roots == [run.devices.root], "a candidate is listed once"
