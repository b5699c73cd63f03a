"""Progress of a long command step on stderr: a bar with time left, or plain lines.

On a terminal :class:`StepProgress` draws a rich bar with the elapsed time and an
estimate of the time left; anywhere else (a pipe, a CI log, ``make run`` captured) it
prints one line per completed step with the same estimate, because a live bar would
show only once, at the end. A step that fails leaves no bar behind, so that the error
is the last line. Nothing goes to stdout.

Example:
    >>> from rich.console import Console
    >>> import io
    >>> buffer = io.StringIO()
    >>> bar = StepProgress(Console(file=buffer), "round")
    >>> bar.start(2, "2 devices")
    >>> bar.update(1, "loss 0.5")
    >>> "round 1/2" in buffer.getvalue()
    True
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["StepProgress", "clock", "time_left"]


def clock(seconds: float) -> str:
    """``H:MM:SS`` of a duration (``-:--:--`` when unknown)."""
    if seconds < 0 or seconds != seconds:  # negative or NaN
        return "-:--:--"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def time_left(elapsed: float, completed: int, total: int) -> float | None:
    """Seconds left at the mean pace so far (``None`` before the first step is done)."""
    if completed <= 0 or total <= 0:
        return None
    return max(0.0, elapsed / completed * (total - completed))


class StepProgress:
    """Steps of one long operation (rounds of a federation, ...) on a stderr console.

    Args:
        console: where to draw (a stderr console).
        label: what a step is called (``"round"``).
    """

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.live = console.is_terminal
        self.total = 0
        self.completed = 0
        self._base: int | None = None
        self._started_at = 0.0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int, description: str) -> None:
        """Begin ``total`` steps (the clock starts now)."""
        self.total, self.completed, self._base = total, 0, None
        self._started_at = time.perf_counter()
        if not self.live:
            self.console.print(
                f"{self.label} 0/{total}: {description}",
                highlight=False,
                markup=False,
                soft_wrap=True,  # a log line is never folded at 80 columns
            )
            return
        self._bar = Progress(
            TextColumn(f"[bold]{self.label} {{task.completed}}/{{task.total}}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
        )
        self._task = self._bar.add_task(description, total=total)
        self._bar.start()

    def update(self, completed: int, description: str) -> None:
        """Record that ``completed`` steps are done.

        The first update sets the pace's origin: when it reports step ``k`` (a resumed
        run), steps before ``k`` were done before :meth:`start` and do not count.
        """
        if self._base is None:
            self._base = max(0, completed - 1)
            if self._bar is not None and self._task is not None and self._base:
                self._bar.reset(self._task, completed=self._base)
        self.completed = completed
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, description=description)
            return
        elapsed = time.perf_counter() - self._started_at
        left = time_left(elapsed, completed - self._base, self.total - self._base)
        estimate = "" if left is None else f", ~{clock(left)} left"
        self.console.print(
            f"{self.label} {completed}/{self.total} ({clock(elapsed)} elapsed{estimate}): "
            f"{description}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def close(self, *, failed: bool = False) -> None:
        """Stop drawing; a failed operation's bar is erased."""
        if self._bar is None:
            return
        if failed:
            self._bar.live.transient = True
        self._bar.stop()
        self._bar = None

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc_type is not None)
