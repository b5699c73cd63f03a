"""benchmarks/bench_synthetic.py: one JSON object, and a non-zero exit over target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_synthetic.py"


def run(*flags: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(SCRIPT), "--users", "3000", "--items", "2000", *flags]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)


def test_small_run_reports_one_json_object() -> None:
    proc = run("--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["interactions"] == 30_000 and result["within_targets"] is True
    assert 0 < result["generate_seconds"] < 60 and result["peak_rss_mb"] > result["baseline_rss_mb"]


def test_over_target_exits_non_zero() -> None:
    proc = run("--max-memory-gb", "0.001")
    assert proc.returncode == 1
    assert "OVER TARGET" in proc.stdout
