"""Progress of long steps: a time-left estimate on a terminal and in a log."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fedpers.simulation.cli.progress import StepProgress, clock, time_left


def test_time_left_is_the_mean_pace_so_far() -> None:
    assert time_left(30.0, 3, 10) == pytest.approx(70.0)
    assert time_left(12.0, 4, 4) == 0.0
    assert time_left(5.0, 0, 10) is None


def test_clock() -> None:
    assert clock(0) == "0:00:00"
    assert clock(3725.4) == "1:02:05"
    assert clock(float("nan")) == "-:--:--"


def test_a_log_gets_one_line_per_step_with_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("fedpers.simulation.cli.progress.time.perf_counter", lambda: now[0])
    buffer = io.StringIO()
    with StepProgress(Console(file=buffer, width=200), "round") as bar:
        bar.start(4, "24 devices")
        now[0] = 110.0
        bar.update(1, "loss 0.5")
        now[0] = 130.0
        bar.update(2, "loss 0.4")
    assert buffer.getvalue().splitlines() == [
        "round 0/4: 24 devices",
        "round 1/4 (0:00:10 elapsed, ~0:00:30 left): loss 0.5",
        "round 2/4 (0:00:30 elapsed, ~0:00:30 left): loss 0.4",
    ]


def test_a_log_line_is_not_folded() -> None:
    buffer = io.StringIO()
    bar = StepProgress(Console(file=buffer, width=40), "audit federation 1, round")
    bar.start(5, "training")
    bar.update(5, "943 devices, hr10_sampled 0.3977, and more text than fits in forty columns")
    assert len(buffer.getvalue().splitlines()) == 2


def test_a_resumed_run_counts_only_the_steps_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("fedpers.simulation.cli.progress.time.perf_counter", lambda: now[0])
    buffer = io.StringIO()
    bar = StepProgress(Console(file=buffer, width=200), "round")
    bar.start(10, "resumed")
    now[0] = 20.0
    bar.update(7, "")  # rounds 1-6 ran before the crash
    now[0] = 40.0
    bar.update(8, "")
    lines = buffer.getvalue().splitlines()
    assert "~0:01:00 left" in lines[1]  # 3 rounds left at 20 s each
    assert "~0:00:40 left" in lines[2]


def test_a_terminal_gets_a_bar_with_time_left_that_a_failure_erases() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with pytest.raises(RuntimeError), StepProgress(console, "canary round") as bar:
        bar.start(5, "500 canaries")
        bar.update(1, "")
        assert bar.live
        raise RuntimeError("boom")
    assert "canary round" in buffer.getvalue() and "left" in buffer.getvalue()
    # the bar was erased: the output ends by moving up over its line and clearing it
    assert buffer.getvalue().endswith("\r\x1b[1A\x1b[2K")


def test_a_finished_bar_stays() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with StepProgress(console, "round") as bar:
        bar.start(2, "")
        bar.update(2, "done")
    assert not buffer.getvalue().endswith("\x1b[2K") and "round 2/2" in buffer.getvalue()
