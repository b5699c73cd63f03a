"""`fedpers` starts fast: the command tree imports no torch, flwr, Ray, TenSEAL or FastAPI.

Each check runs the real console-script entry point in a fresh interpreter and reads
``sys.modules`` when it exits, so an eager heavy import anywhere in the command modules
(the root app registers every sub-app) fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

HEAVY = ("torch", "flwr", "ray", "tenseal", "opacus", "matplotlib", "fastapi", "uvicorn")

_PROBE = """
import atexit, json, sys
HEAVY = {heavy!r}
def _dump():
    with open({out!r}, "w") as fh:
        json.dump(sorted(m for m in HEAVY if m in sys.modules), fh)
atexit.register(_dump)
sys.argv = ["fedpers", *{args!r}]
from fedpers.simulation.cli import main
main()
"""


def _heavy_modules_after(
    tmp_path: Path, *args: str
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "modules.json"
    code = _PROBE.format(heavy=HEAVY, out=str(out), args=list(args))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded: list[str] = json.loads(out.read_text())
    return loaded, proc


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["simulate", "--help"],
        ["audit", "--help"],
        ["deploy", "prepare", "--help"],
        ["keys", "--help"],
        ["bench", "centralized", "--help"],
        ["client", "--help"],
        ["runs", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_imports_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    loaded, proc = _heavy_modules_after(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert loaded == [], f"`fedpers {' '.join(args)}` imported {loaded}"


def test_a_bad_option_is_rejected_before_any_heavy_import(tmp_path: Path) -> None:
    loaded, proc = _heavy_modules_after(tmp_path, "simulate", "--rounds", "0", "--out", "x")
    assert proc.returncode == 2
    assert loaded == []
    assert not (tmp_path / "x").exists()


def test_runs_list_imports_no_heavy_library(tmp_path: Path) -> None:
    loaded, proc = _heavy_modules_after(tmp_path, "runs", "list", "--root", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert loaded == []


def test_client_recommend_ranks_without_torch(tmp_path: Path) -> None:
    """The on-device ranking path: load the published model, fold in, rank (numpy only)."""
    import numpy as np

    from fedpers.client.consent import ConsentManager
    from fedpers.client.global_model import GlobalModel
    from fedpers.client.model import ModelConfig
    from fedpers.client.store import Event, EventStore

    rng = np.random.default_rng(0)
    n, d = 300, 8
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n, dim=d),
        [rng.normal(0, 0.1, (n, d)).astype(np.float32), np.zeros(n, np.float32)],
        [str(i) for i in range(n)],
    )
    path = model.save(tmp_path / "run" / "models" / "round-0001.npz")
    with EventStore.create(tmp_path / "d.db", model.item_ids) as store:
        ConsentManager(store).grant(1, 5, 6)
        store.append(Event("7", "click", 1.0, 1_700_000_000))
    loaded, proc = _heavy_modules_after(
        tmp_path,
        "client",
        "recommend",
        str(tmp_path / "d.db"),
        "--model",
        str(path.parent),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["items"]) == 10
    assert loaded == [], f"`fedpers client recommend` imported {loaded}"


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The probe itself works: a command that needs torch shows torch."""
    loaded, proc = _heavy_modules_after(
        tmp_path, "bench", "centralized", "--dataset", str(tmp_path / "missing.csv")
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert "torch" in loaded


def test_version_is_the_installed_distribution() -> None:
    exe = Path(sys.executable).parent / "fedpers"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == f"fedpers {version('fedpers')}\n"


def test_bench_defaults_are_the_centralized_config() -> None:
    from fedpers.simulation.cli.bench import CENTRALIZED_DEFAULTS
    from fedpers.simulation.evaluation.centralized import CentralizedConfig

    config = CentralizedConfig()
    assert {k: getattr(config, k) for k in CENTRALIZED_DEFAULTS} == CENTRALIZED_DEFAULTS
