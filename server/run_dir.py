"""Every file and folder of a run directory, named in one place.

A run directory is what ``fedpers simulate`` or ``fedpers deploy prepare`` creates and
every later command reads (``fedpers serve``, ``fedpers audit``, ``fedpers runs``)::

    RUN_DIR/
      config.json           the federation configuration
      run.db                the run database and model registry (fedpers.server.rundb)
      metrics.jsonl         one JSON object per round
      checkpoint.npz        the state a resumed run continues from
      models/round-NNNN.npz the global model of every round
      keys/                 secure-aggregation keys of a simulated run
      devices/              the devices folder (fedpers.client.devices_folder)
      api.db                the API's database (fedpers serve)
      context_popularity.npz optional public per-context boosts the API serves
      report.json, report.html   the privacy audit (fedpers audit)
      deployment.json, tls/, auth/, flwr/, logs/   a deployment's plan and credentials
      ray_owner.json        which process owns the simulation's Ray cluster

Only names and light checks live here (pathlib and JSON): the serving API uses it and
loads no federation code.

Example:
    >>> import tempfile
    >>> run = RunDirectory.create(Path(tempfile.mkdtemp()) / "r1")
    >>> run.run_db.name, run.model_file(3).relative_to(run.root).as_posix()
    ('run.db', 'models/round-0003.npz')
    >>> run.holds_run()
    False
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpers.client.devices_folder import DevicesFolder
from fedpers.client.folder_entry import FolderEntry
from fedpers.privacy.errors import DataError, StoreError

__all__ = ["RunDirectory"]


@dataclass(frozen=True)
class RunDirectory:
    """The paths of one run directory (construction neither reads nor creates anything).

    Use :meth:`create` where a run is written and :meth:`open` where an existing run is
    read: both check the folder and say clearly what is wrong.

    Attributes:
        root: the run directory.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def create(cls, path: str | Path) -> RunDirectory:
        """The run directory at ``path``, created (with its parents) when missing.

        Raises:
            StoreError: when ``path`` exists and is not a folder, or cannot be created.
        """
        run = cls(Path(path))
        try:
            run.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StoreError(f"{run.root}: not a folder, cannot hold a run") from exc
        except OSError as exc:
            raise StoreError(f"{run.root}: cannot create the run directory ({exc})") from exc
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        """The existing run at ``path``: a folder that holds a run database.

        Raises:
            StoreError: when ``path`` is not a folder, or holds no ``run.db``.
        """
        run = cls(Path(path))
        if not run.root.is_dir():
            raise StoreError(f"{run.root}: no such run directory")
        if not run.run_db.is_file():
            raise StoreError(f"{run.root}: not a run directory (no {run.run_db.name})")
        return run

    def holds_run(self) -> bool:
        """Whether a run was configured or started here (``config.json`` or ``run.db``)."""
        return self.config.is_file() or self.run_db.is_file()

    # -- the federation's files --------------------------------------------------------

    config = FolderEntry("config.json", "the federation configuration")
    run_db = FolderEntry("run.db", "the run database and model registry")
    metrics = FolderEntry("metrics.jsonl", "one JSON object per round")
    checkpoint = FolderEntry("checkpoint.npz", "the latest checkpoint, from which a run resumes")
    models = FolderEntry("models", "the global model of every round")

    def model_file(self, round_: int) -> Path:
        """``models/round-NNNN.npz``: the global model of ``round_``."""
        return self.models / f"round-{int(round_):04d}.npz"

    def find_model(self, registered: str | Path) -> Path:
        """The file of a registry path: as recorded, relative to the run, or in ``models/``.

        A run directory that was moved keeps working: its registry still names the old
        place. Returns the recorded path when no candidate exists.
        """
        path = Path(registered)
        for candidate in (path, self.root / path, self.models / path.name):
            if candidate.is_file():
                return candidate
        return path

    keys = FolderEntry("keys", "the secure-aggregation keys of a simulated run")

    @property
    def devices(self) -> DevicesFolder:
        """``devices/``: the run's own devices folder."""
        return DevicesFolder(self.root / "devices")

    def devices_candidates(self, configured: str | Path | None) -> list[DevicesFolder]:
        """Where the run's devices folder may be, most specific first.

        ``configured`` is the configuration's ``devices_dir``: relative to the run, then
        as given, then the run's own ``devices/`` (a moved run).
        """
        candidates: list[Path] = []
        if configured:
            given = Path(configured)
            candidates.append(given if given.is_absolute() else self.root / given)
            candidates.append(given)
        candidates.append(self.devices.root)
        unique = dict.fromkeys(candidates)
        return [DevicesFolder(p) for p in unique]

    def find_devices(self, configured: str | Path | None) -> DevicesFolder | None:
        """The first existing folder of :meth:`devices_candidates`, ``None`` without one."""
        return next((f for f in self.devices_candidates(configured) if f.root.is_dir()), None)

    # -- serving and audit -------------------------------------------------------------

    api_db = FolderEntry("api.db", "the API's database (``fedpers serve``'s default ``--db``)")
    context_popularity = FolderEntry(
        "context_popularity.npz", "optional public per-context boosts (P11)"
    )
    report_json = FolderEntry("report.json", "the privacy audit's report")
    report_html = FolderEntry("report.html", "the privacy audit's report for people")

    # -- deployment and simulation runtime ---------------------------------------------

    deployment_plan = FolderEntry(
        "deployment.json", "a deployment's plan (``fedpers deploy prepare``)"
    )
    tls = FolderEntry("tls", "a deployment's certificates")
    auth = FolderEntry("auth", "a deployment's SuperNode keys")
    flwr = FolderEntry("flwr", "a deployment's Flower homes and app")
    logs = FolderEntry("logs", "a local deployment's process logs")
    ray_owner = FolderEntry("ray_owner.json", "the process that owns a simulation's Ray cluster")

    # -- reading -----------------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as a dict (empty when the run has none).

        Raises:
            DataError: when the file is not a JSON object.
        """
        if not self.config.is_file():
            return {}
        try:
            data = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.config}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DataError(f"{self.config}: not a JSON object")
        return data
