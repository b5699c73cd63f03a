"""Which API database a `fedpers serve` command works on: ``--db``, or the run's own."""

from __future__ import annotations

from pathlib import Path

from fedpers.privacy.errors import ConfigError, StoreError
from fedpers.server.run_dir import RunDirectory

__all__ = ["api_database", "check_run"]


def check_run(run: Path) -> RunDirectory:
    """``run`` as a run directory.

    Raises:
        ConfigError: it is not one (it says how to make one).
    """
    try:
        return RunDirectory.open(run)
    except StoreError as exc:
        raise ConfigError(f"{exc}; see `fedpers simulate`") from exc


def api_database(run: Path | None, db: Path | None, *, check: bool = True) -> Path:
    """The API database path from ``--db`` or ``--run`` (one of them is needed).

    Args:
        run: ``--run``.
        db: ``--db`` (wins over ``run``).
        check: require ``run`` to be a run directory (a reader that only needs the
            database file passes ``False`` and reports a missing file itself).

    Raises:
        ConfigError: neither was given, or (``check``) ``run`` is not a run directory.
    """
    if db is not None:
        return db
    if run is None:
        raise ConfigError("give --run RUN_DIR or --db PATH")
    return (check_run(run) if check else RunDirectory(run)).api_db
