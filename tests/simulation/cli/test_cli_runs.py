"""`fedpers runs list` and `fedpers runs log` over run directories written by RunDB.

The run directories are written through the run database the coordinator itself uses
(:class:`fedpers.server.rundb.RunDB`), in the four states a user meets: complete,
stopped at the budget, crashed after some rounds, and prepared but never started.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedpers.server.rundb import RoundRecord, RunDB

FEDPERS = str(Path(sys.executable).parent / "fedpers")


def _fedpers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDPERS, *args], capture_output=True, text=True, timeout=120)


def _write_run(
    run: Path,
    *,
    rounds: int,
    done: int,
    dp: str = "user",
    final: dict[str, float] | None = None,
    stopped: str | None = None,
    checkpoint: bool = True,
) -> None:
    with RunDB.open(run) as db:
        db.write_config({"rounds": rounds, "dp": dp, "run_dir": str(run)})
        for r in range(1, done + 1):
            db.record_round(
                RoundRecord(
                    round=r,
                    status="completed",
                    participants=10 + r,
                    epsilon=0.5 * r if dp == "user" else None,
                    metrics={"loss": 1.0 / r, "hr10_sampled": 0.1 * r},
                    wall_seconds=0.25,
                    started_at=1_700_000_000.0 + r,
                )
            )
        if final is not None:
            db.write_privacy(
                {
                    "epsilon": 0.5 * done if dp == "user" else None,
                    "stopped_reason": stopped,
                    "final_metrics": final,
                }
            )
    if checkpoint:
        (run / "checkpoint.npz").write_bytes(b"placeholder")
    for suffix in ("-wal", "-shm"):  # a closed run, as after a clean exit
        (run / f"run.db{suffix}").unlink(missing_ok=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _write_run(
        root / "a-complete", rounds=3, done=3, final={"hr10_sampled": 0.61, "ndcg10_sampled": 0.3}
    )
    _write_run(
        root / "b-stopped",
        rounds=5,
        done=2,
        final={"hr10_sampled": 0.4, "ndcg10_sampled": 0.2},
        stopped="privacy budget: round 3 would exceed epsilon 1.0",
    )
    _write_run(root / "c-crashed", rounds=4, done=2)
    _write_run(root / "d-prepared", rounds=4, done=0, dp="none", checkpoint=False)
    (root / "e-not-a-run").mkdir()
    (root / "e-not-a-run" / "notes.txt").write_text("x")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_list_json_reports_status_epsilon_and_accuracy(root: Path) -> None:
    before = _tree(root)
    proc = _fedpers("runs", "list", "--root", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    runs: dict[str, dict[str, Any]] = {Path(r["run_dir"]).name: r for r in payload["runs"]}
    assert set(runs) == {"a-complete", "b-stopped", "c-crashed", "d-prepared"}
    a, b, c, d = (runs[k] for k in ("a-complete", "b-stopped", "c-crashed", "d-prepared"))
    assert (a["status"], a["rounds_done"], a["rounds"], a["epsilon"]) == ("complete", 3, 3, 1.5)
    assert (a["hr10_sampled"], a["ndcg10_sampled"]) == (0.61, 0.3)
    assert b["status"] == "stopped" and b["reason"].startswith("privacy budget")
    # a crashed run shows the latest figures it recorded and that it can be resumed
    assert (c["status"], c["rounds_done"], c["epsilon"], c["resumable"]) == (
        "incomplete",
        2,
        1.0,
        True,
    )
    assert c["hr10_sampled"] == pytest.approx(0.2) and c["ndcg10_sampled"] is None
    assert (d["status"], d["rounds_done"], d["epsilon"], d["resumable"]) == (
        "prepared",
        0,
        None,
        False,
    )
    assert a["created"].startswith("2023-11-14T")  # the first round's start, in UTC
    assert _tree(root) == before  # listing writes nothing (no -wal/-shm files either)


def test_list_table_names_every_run(root: Path) -> None:
    proc = _fedpers("runs", "list", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    for name in ("a-complete", "b-stopped", "c-crashed", "d-prepared"):
        assert name in proc.stdout
    assert "e-not-a-run" not in proc.stdout
    assert "incomplete (resumable)" in proc.stdout and "non-private" in proc.stdout


def test_list_of_an_empty_folder(tmp_path: Path) -> None:
    proc = _fedpers("runs", "list", "--root", str(tmp_path), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"root": str(tmp_path), "runs": []}


def test_log_shows_every_round(root: Path) -> None:
    run = root / "c-crashed"
    proc = _fedpers("runs", "log", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert payload["rounds"] == lines and [r["round"] for r in lines] == [1, 2]
    assert payload["run"]["status"] == "incomplete"
    table = _fedpers("runs", "log", str(run))
    assert table.returncode == 0
    rows = [line.split() for line in table.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("1", "completed", "11"),
        ("2", "completed", "12"),
    ]


def test_log_of_a_prepared_run_is_empty_and_of_a_folder_is_an_error(root: Path) -> None:
    proc = _fedpers("runs", "log", str(root / "d-prepared"), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["rounds"] == []
    bad = _fedpers("runs", "log", str(root / "e-not-a-run"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"error: {root / 'e-not-a-run'}: not a run directory (no config.json or run.db)"
    ]


def test_a_malformed_log_names_the_line(root: Path) -> None:
    run = root / "a-complete"
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("{not json\n")
    proc = _fedpers("runs", "log", str(run))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {run / 'metrics.jsonl'}:4: invalid JSON")
