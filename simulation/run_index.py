"""Read run directories without changing them: what ``fedpers runs list|log`` shows.

A run directory (see ``docs/concepts.md`` and
:class:`~fedpers.server.run_dir.RunDirectory`) holds ``config.json``, ``metrics.jsonl`` (one
JSON object per round), ``run.db`` and, once audited, ``report.json``. Everything here
only reads: ``run.db`` is opened read-only, so listing a folder of runs never creates
or migrates a database in it.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> list_runs(root)
    []
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedpers.privacy.errors import DataError, StoreError
from fedpers.server.run_dir import RunDirectory
from fedpers.server.rundb import RunDB

__all__ = [
    "RunSummary",
    "list_runs",
    "read_round_log",
    "summarize_run",
]


@dataclass(frozen=True)
class RunSummary:
    """One line of ``fedpers runs list``.

    Attributes:
        run_dir: the directory.
        status: ``complete`` (every round ran and the model was scored), ``stopped``
            (ended early, e.g. the privacy budget; ``reason`` says why), ``incomplete``
            (rounds missing: still running, or crashed; ``resumable`` when a checkpoint
            exists) or ``prepared`` (configured, no round yet).
        rounds_done: rounds recorded in ``metrics.jsonl``.
        rounds: rounds the configuration asks for.
        dp: the ``--dp`` mode (``none``, ``user``, ``record``, ``both``).
        epsilon: user-level epsilon spent (``None``: non-private or nothing spent yet).
        hr10_sampled: the final test figure, else the latest evaluated round's.
        ndcg10_sampled: as ``hr10_sampled``.
        created: when the run was configured (UTC, ISO 8601).
        audited: whether ``report.json`` exists.
        resumable: whether a checkpoint exists (``fedpers simulate --resume RUN_DIR``).
        reason: why a stopped run stopped.
    """

    run_dir: str
    status: str
    rounds_done: int
    rounds: int | None
    dp: str | None
    epsilon: float | None
    hr10_sampled: float | None
    ndcg10_sampled: float | None
    created: str | None
    audited: bool
    resumable: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this run."""
        return asdict(self)


def read_round_log(run_dir: Path) -> list[dict[str, Any]]:
    """The rounds of ``run_dir/metrics.jsonl`` in order (an empty list before round 1).

    Raises:
        DataError: when ``run_dir`` is not a run directory or the file is malformed.
    """
    run = RunDirectory(Path(run_dir))
    if not run.holds_run():
        raise DataError(
            f"{run.root}: not a run directory (no {run.config.name} or {run.run_db.name})"
        )
    path = run.metrics
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
        if not isinstance(row, dict) or not isinstance(row.get("round"), int):
            raise DataError(f"{path}:{number}: a round is a JSON object with an integer 'round'")
        rows.append(row)
    return rows


def _read_config(run: RunDirectory) -> dict[str, Any]:
    try:
        return run.read_config()
    except DataError:
        return {}


def _read_privacy(run: RunDirectory) -> dict[str, Any]:
    """The ``privacy`` table of ``run.db``, read without writing anything ({} when absent)."""
    try:
        with RunDB.open_readonly(run.root) as db:
            return db.read_privacy()
    except (StoreError, sqlite3.Error):  # no run.db, or no privacy table yet
        return {}


def _created(run: RunDirectory, rounds: list[dict[str, Any]]) -> str | None:
    stamps = [r["started_at"] for r in rounds[:1] if r.get("started_at")]
    config = run.config
    if config.is_file():
        stamps.append(config.stat().st_mtime)
    if not stamps:
        return None
    return datetime.fromtimestamp(min(stamps), tz=UTC).isoformat(timespec="seconds")


def _latest(rounds: list[dict[str, Any]], key: str) -> Any:
    for row in reversed(rounds):
        if row.get(key) is not None:
            return row[key]
    return None


def summarize_run(run_dir: Path) -> RunSummary:
    """The :class:`RunSummary` of one run directory (read-only).

    Raises:
        DataError: when ``run_dir`` is not a run directory.
    """
    run = RunDirectory(Path(run_dir))
    rounds = read_round_log(run.root)
    config = _read_config(run)
    privacy = _read_privacy(run)
    final = privacy.get("final_metrics") if isinstance(privacy.get("final_metrics"), dict) else None
    planned = config.get("rounds") if isinstance(config.get("rounds"), int) else None
    reason = privacy.get("stopped_reason")
    if final is not None:
        status = "stopped" if reason else "complete"
    elif rounds:
        status = "incomplete"
    else:
        status = "prepared"
    epsilon = privacy.get("epsilon") if final is not None else _latest(rounds, "epsilon")
    figures = final if final is not None else {}
    return RunSummary(
        run_dir=str(run.root),
        status=status,
        rounds_done=len(rounds),
        rounds=planned,
        dp=config.get("dp"),
        epsilon=epsilon,
        hr10_sampled=figures.get("hr10_sampled", _latest(rounds, "hr10_sampled")),
        ndcg10_sampled=figures.get("ndcg10_sampled", _latest(rounds, "ndcg10_sampled")),
        created=_created(run, rounds),
        audited=run.report_json.is_file(),
        resumable=run.checkpoint.is_file(),
        reason=reason if isinstance(reason, str) else None,
    )


def list_runs(root: Path) -> list[RunSummary]:
    """Every run directory directly under ``root`` (and ``root`` itself), oldest first.

    Raises:
        DataError: when ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory of runs")
    candidates = [root] if RunDirectory(root).holds_run() else []
    candidates += sorted(p for p in root.iterdir() if p.is_dir() and RunDirectory(p).holds_run())
    summaries = [summarize_run(p) for p in candidates]
    return sorted(summaries, key=lambda s: (s.created or "", s.run_dir))
