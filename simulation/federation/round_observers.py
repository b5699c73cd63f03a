"""Watch the rounds of in-process federations run deep inside a command (e.g. the audit's).

A command that calls into code running federations (the audit's canary federation and
its non-private reference) cannot pass a per-round callback through every layer; it
registers an observer for the duration of the call instead:

    with observe_rounds(on_event):
        write_report(run_dir, options)

:func:`fedpers.simulation.federation.fedsim.run_fedsim` reports to every active observer when
a federation starts (``entry`` is ``None``) and after each round. Observers are held in a
context variable, so concurrent callers (threads, tasks) do not see each other's.

Example:
    >>> seen = []
    >>> with observe_rounds(lambda rounds, entry: seen.append((rounds, entry))):
    ...     notify(3, None)
    ...     notify(3, {"round": 1})
    >>> seen
    [(3, None), (3, {'round': 1})]
    >>> notify(3, {"round": 2})  # no observer: nothing happens
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["RoundObserver", "notify", "observe_rounds"]

RoundObserver = Callable[[int, dict[str, Any] | None], None]
"""Called with the federation's round count and the round's entry (``None``: starting)."""

_OBSERVERS: ContextVar[tuple[RoundObserver, ...]] = ContextVar(
    "fedpers_round_observers", default=()
)


@contextmanager
def observe_rounds(observer: RoundObserver) -> Iterator[None]:
    """Call ``observer`` for every in-process federation round inside the block."""
    token = _OBSERVERS.set((*_OBSERVERS.get(), observer))
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def notify(rounds: int, entry: dict[str, Any] | None) -> None:
    """Report a federation's start (``entry`` ``None``) or one finished round."""
    for observer in _OBSERVERS.get():
        observer(rounds, entry)
