"""Bad input to `fedpers simulate`: one line on stderr, exit 2, nothing written or left behind.

Every case runs the installed console script, as a user would, and compares the file
tree before and after.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedpers.simulation.data import SyntheticConfig, generate_synthetic, write_interaction_log

FEDPERS = str(Path(sys.executable).parent / "fedpers")


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = generate_synthetic(SyntheticConfig(n_users=12, n_items=30, events_per_user=6, seed=4))
    return write_interaction_log(data, tmp_path_factory.mktemp("data") / "tiny.csv")


def _fedpers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDPERS, *args], capture_output=True, text=True, timeout=300)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _one_error_line(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert not proc.stderr.startswith("\n"), repr(proc.stderr[:80])
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


def test_resume_of_a_folder_that_is_not_a_run_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.txt").write_text("not a run")
    before = _tree(folder)
    proc = _fedpers("simulate", "--resume", str(folder))
    _one_error_line(proc, "not a run directory")
    assert _tree(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.txt"]
    # and it stays something that no other command mistakes for a run
    _one_error_line(_fedpers("runs", "log", str(folder)), "not a run directory")


def test_resume_of_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    proc = _fedpers("simulate", "--resume", str(tmp_path / "nope"))
    _one_error_line(proc, "no such run directory")
    assert list(tmp_path.iterdir()) == []


def test_resume_of_a_run_without_checkpoint_is_refused_unchanged(tmp_path: Path) -> None:
    from fedpers.server.rundb import RunDB

    run = tmp_path / "run"
    with RunDB.open(run) as db:
        db.write_config({"rounds": 3})
    before = _tree(run)
    proc = _fedpers("simulate", "--resume", str(run))
    _one_error_line(proc, "no checkpoint to resume from")
    assert _tree(run) == before


BAD_INPUTS = [
    (["--rounds", "0"], "'--rounds': 0 is not in the range x>=1"),
    (["--rounds", "-5"], "'--rounds': -5 is not in the range x>=1"),
    (["--nodes", "0"], "'--nodes': 0 is not in the range x>=1"),
    (["--rounds", "two"], "'--rounds': 'two' is not a valid integer"),
    (["--no-such-flag"], "No such option '--no-such-flag'"),
    (["--dp", "user"], "user-level DP needs --epsilon or --noise-multiplier"),
    (["--no-p10-fraction", "1.5"], "--no-p10-fraction must be in [0, 1]"),
    (["--dataset", "missing.csv"], "missing.csv"),
    (["--mode", "swarm"], "swarm"),
    (["--secure-agg", "he", "--server-opt", "nesterov"], "nesterov"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_INPUTS, ids=lambda a: str(a))
def test_bad_input_is_one_line_and_leaves_no_out_dir(
    tmp_path: Path, tiny_log: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "runs" / "new"
    base = ["simulate", "--dataset", str(tiny_log), "--rounds", "1", "--out", str(out)]
    proc = _fedpers(*base, *args)
    _one_error_line(proc, fragment)
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [BAD_INPUTS[5], BAD_INPUTS[8], BAD_INPUTS[9]],  # errors raised after the directory exists
    ids=lambda a: str(a),
)
def test_a_failure_in_an_existing_out_dir_removes_only_what_it_wrote(
    tmp_path: Path, tiny_log: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    proc = _fedpers(
        "simulate", "--dataset", str(tiny_log), "--rounds", "1", "--out", str(out), *args
    )
    _one_error_line(proc, fragment)
    assert _tree(out) == {"notes.md": b"mine"}


def test_errors_of_other_commands_have_the_same_shape(tmp_path: Path) -> None:
    _one_error_line(_fedpers("runs", "list", "--root", str(tmp_path / "none")), "no such directory")
    _one_error_line(_fedpers("client", "info", str(tmp_path / "none.db")), "none.db")
    _one_error_line(_fedpers("keys", "show", str(tmp_path / "none")), "none")
    _one_error_line(_fedpers("audit", "--canaries", "1", str(tmp_path)), "'--canaries'")
    _one_error_line(_fedpers("data", "fetch", "ml-1m"), "ml-1m")
    _one_error_line(_fedpers("audit", str(tmp_path)), "not a run directory")


@pytest.mark.parametrize(
    ("args", "fragment"), [BAD_INPUTS[5], BAD_INPUTS[6], BAD_INPUTS[7]], ids=lambda a: str(a)
)
def test_a_failed_deploy_prepare_leaves_no_run_dir(
    tmp_path: Path, tiny_log: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "runs" / "dep"
    base = ["deploy", "prepare", "--dataset", str(tiny_log), "--out", str(out)]
    _one_error_line(_fedpers(*base, *args), fragment)
    assert not (tmp_path / "runs").exists()
