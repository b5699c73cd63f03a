"""The model the API serves, and how a new registry version replaces it.

:class:`ModelHolder` loads the latest global model of a run's registry (``run.db`` table
``models``, :meth:`fedpers.server.rundb.RunDB.latest_model`) into an immutable
:class:`ServedModel` that holds everything a request needs precomputed: item vectors and
bias, unit vectors for MMR, public popularity, the catalogue and the model's privacy
guarantee. A background thread polls the registry every ``reload_interval_s`` seconds;
a new version is read, checked against the registry's SHA-256 and only then swapped in
by replacing one reference. A request takes the reference once at its start
(:meth:`ModelHolder.current`) and keeps that model to its end, so a reload never
changes a model under a running request; a missing, partial or corrupt new file is
logged and never replaces a good model (it is retried at the next poll).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedpers.client.global_model import GlobalModel
from fedpers.client.inference.ranking import unit_rows
from fedpers.client.session import SessionConfig
from fedpers.privacy.errors import FedpersError, StoreError
from fedpers.server.api.catalogue import Catalogue, load_catalogue
from fedpers.server.checkpoint import sha256_file
from fedpers.server.run_dir import RunDirectory
from fedpers.server.rundb import RunDB

__all__ = [
    "ModelHolder",
    "ServedModel",
    "load_context_popularity",
    "load_served_model",
    "privacy_guarantee",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One registry version, ready to serve (never modified after loading).

    Attributes:
        version: the registry version (the round that produced the model).
        round: the federation round of the model.
        sha256: hex SHA-256 of the model file (the download's ETag).
        created_at: when the registry recorded it (epoch seconds).
        path: the ``.npz`` file.
        model: the global model (item vectors, bias, catalogue, cold items).
        index: catalogue item id -> model index.
        unit_vectors: item vectors scaled to unit norm (MMR similarity).
        popularity: public popularity of each item (the global item bias).
        popular_order: item indices by decreasing popularity (the non-profiled ranking
            without context boosts, precomputed once).
        context_popularity: per ``"key=value"`` context, a popularity boost (P11).
        session: how a request's events shift the ranking query.
        catalogue: titles and categories.
        privacy: the model's guarantee (epsilon, delta, unit, accountant, mechanism).
        loaded_at: when this process loaded it.
    """

    version: int
    round: int
    sha256: str
    created_at: float
    path: Path
    model: GlobalModel
    index: Mapping[str, int]
    unit_vectors: np.ndarray
    popularity: np.ndarray
    catalogue: Catalogue
    privacy: Mapping[str, Any]
    session: SessionConfig = field(default_factory=SessionConfig)
    context_popularity: Mapping[str, np.ndarray] = field(default_factory=dict)
    popular_order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    loaded_at: float = 0.0

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return len(self.model.item_ids)

    @property
    def dim(self) -> int:
        """Width of a user vector."""
        return int(self.model.config.dim)


def privacy_guarantee(params: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The published guarantee of one model: the run's privacy table and the model's meta.

    The model's own ``epsilon``/``delta`` (accounted up to its round) take precedence over
    the run's final values. A non-private run says so (``epsilon`` is ``None``).

    Args:
        params: ``RunDB.read_privacy()``.
        meta: the model file's meta.
    """
    epsilon = meta.get("epsilon", params.get("epsilon"))
    delta = meta.get("delta", params.get("delta"))
    return {
        "epsilon": None if epsilon is None else float(epsilon),
        "delta": None if delta is None else float(delta),
        "unit": params.get("unit"),
        "accountant": params.get("accountant_method") or params.get("accountant"),
        "mechanism": params.get("mechanism"),
        "label": params.get("label"),
        "secure_aggregation": params.get("secure_aggregation"),
    }


def load_context_popularity(run_dir: Path, n_items: int) -> dict[str, np.ndarray]:
    """The run's public per-context popularity boosts (P11), if it provides them.

    ``RUN_DIR/context_popularity.npz`` holds one ``float[items]`` array per context
    (``"hour=21"``, ``"device=tv"``, ...), from public or aggregate information of the
    catalogue owner, never from one user. Missing file: no boosts. A bad file is logged
    and ignored.
    """
    path = RunDirectory(run_dir).context_popularity
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            boosts = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    except (OSError, ValueError) as exc:
        logger.warning("%s: ignored (%s)", path, exc)
        return {}
    bad = [k for k, v in boosts.items() if v.shape != (n_items,) or not np.isfinite(v).all()]
    if bad:
        logger.warning("%s: ignored contexts %s (need %d finite values)", path, bad, n_items)
    return {k: v for k, v in boosts.items() if k not in bad}


def load_served_model(
    run_dir: Path, row: Mapping[str, Any], params: Mapping[str, Any]
) -> ServedModel:
    """Load and precompute one registry row.

    Args:
        run_dir: the run directory.
        row: a ``models`` registry row (``round``, ``path``, ``sha256``, ``created_at``).
        params: the run's privacy table.

    Raises:
        StoreError: the file is missing, unreadable or does not match the registry's hash.
    """
    path = RunDirectory(run_dir).find_model(str(row["path"]))
    if not path.is_file():
        raise StoreError(f"{path}: the registry's model file is missing")
    digest = sha256_file(path)
    if digest != row["sha256"]:
        raise StoreError(
            f"{path}: SHA-256 {digest[:12]}... does not match the registry's "
            f"{str(row['sha256'])[:12]}... (partial or replaced file)"
        )
    model = GlobalModel.load(path)
    try:
        session = SessionConfig.from_meta(model.meta.get("session"))
    except FedpersError:
        session = SessionConfig()
    popularity = np.asarray(model.item_bias, dtype=np.float64)
    return ServedModel(
        version=int(row["round"]),
        round=int(model.meta.get("round", row["round"])),
        sha256=digest,
        created_at=float(row.get("created_at") or 0.0),
        path=path,
        model=model,
        index=model.index,
        unit_vectors=unit_rows(model.item_vectors),
        popularity=popularity,
        popular_order=np.argsort(-popularity, kind="stable"),
        catalogue=load_catalogue(run_dir, model.item_ids, model.item_features),
        privacy=privacy_guarantee(params, model.meta),
        session=session,
        context_popularity=load_context_popularity(run_dir, len(model.item_ids)),
        loaded_at=time.time(),
    )


class ModelHolder:
    """The latest registry model of one run, hot-reloaded.

    Example (``start()`` also polls in a thread; ``reload()`` is one poll):
        >>> import tempfile
        >>> from fedpers.client.global_model import GlobalModel
        >>> from fedpers.client.model import ModelConfig
        >>> from fedpers.server.checkpoint import sha256_file
        >>> from fedpers.server.rundb import RunDB
        >>> folder = tempfile.TemporaryDirectory()
        >>> run = Path(folder.name)
        >>> holder = ModelHolder(run, reload_interval_s=0)
        >>> holder.reload(), holder.current(), holder.last_error.endswith("(no run.db)")
        (False, None, True)
        >>> arrays = [np.eye(3, 2, dtype=np.float32), np.zeros(3, dtype=np.float32)]
        >>> model = GlobalModel.from_arrays(ModelConfig(n_items=3, dim=2), arrays, ["a", "b", "c"])
        >>> path = model.save(run / "models" / "round-0001.npz")
        >>> with RunDB.open(run) as db:
        ...     db.register_model(1, path, sha256_file(path), {})
        >>> holder.reload(), holder.current().version, holder.reload()
        (True, 1, False)
        >>> folder.cleanup()
    """

    def __init__(self, run_dir: Path, *, reload_interval_s: float = 2.0) -> None:
        """Bind to ``run_dir`` (nothing is read until :meth:`reload` or :meth:`start`).

        Args:
            run_dir: the run directory holding ``run.db`` and the model files.
            reload_interval_s: seconds between registry polls (``<= 0``: never poll).
        """
        self.run_dir = Path(run_dir)
        self.reload_interval_s = float(reload_interval_s)
        self._served: ServedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: tuple[int, str] | None = None
        self.last_error: str | None = None

    def current(self) -> ServedModel | None:
        """The model to serve now (take it once per request and keep it)."""
        return self._served

    @property
    def ready(self) -> bool:
        """Whether a model is loaded."""
        return self._served is not None

    def reload(self) -> bool:
        """Load the registry's latest version if it differs from the served one.

        Never raises for a bad new version: it is logged, ``last_error`` says why, and the
        served model stays.

        Returns:
            Whether a new model was swapped in.
        """
        with self._lock:  # one reload at a time; readers never wait on it
            try:
                row, params = self._latest()
            except FedpersError as exc:
                self._note_failure(None, str(exc))
                return False
            if row is None:
                return False
            served = self._served
            key = (int(row["round"]), str(row["sha256"]))
            if served is not None and (served.version, served.sha256) == key:
                return False
            try:
                new = load_served_model(self.run_dir, row, params)
            except FedpersError as exc:
                self._note_failure(key, str(exc))
                return False
            self._served = new  # the atomic swap: one reference assignment
            self._failed = None
            self.last_error = None
            logger.info("serving model version %d (sha256 %s)", new.version, new.sha256[:12])
            return True

    def _latest(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        run = RunDirectory.open(self.run_dir)
        db = RunDB.open(run.root)
        try:
            return db.latest_model(), db.read_privacy()
        except Exception as exc:  # sqlite errors while the federation writes
            raise StoreError(f"{run.run_db}: cannot read the registry ({exc})") from exc
        finally:
            db.close()

    def _note_failure(self, key: tuple[int, str] | None, message: str) -> None:
        if key is None or key != self._failed:
            logger.warning("model not (re)loaded: %s", message)
        self._failed = key
        self.last_error = message

    def start(self) -> None:
        """Load the latest model now and poll the registry in a daemon thread."""
        self.reload()
        if self.reload_interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="fedpers-model-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the served model stays)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.reload_interval_s):
            self.reload()
