"""The run database: what a federation did, round by round, and its model registry.

One SQLite file per run, ``RUN_DIR/run.db`` (sqlite-utils, WAL, versioned migrations),
next to ``config.json`` and ``metrics.jsonl`` (one JSON object per round); the names are
:class:`~fedpers.server.run_dir.RunDirectory`'s. Tables:

``config``
    key/value (JSON) copy of the run configuration.
``privacy``
    key/value (JSON) privacy parameters: unit, mechanism, noise multiplier, clipping,
    sampling, delta, target epsilon, accountant(s), aggregation scheme, label.
``rounds``
    one row per round: status (``completed``/``skipped``/``stopped``) and why, how many
    devices were sampled, took part, were dropped or refused, the noise multiplier and
    standard deviation, clip norm, sample rate, clipped fraction, an update-norm
    summary, epsilon so far (``NULL`` for a non-private run), metrics, wall time.
``participants``
    one row per sampled device and round: ``accepted``, ``dropped``, ``refused``,
    ``failed`` or ``timeout``, and the reason; plus a ``duplicate`` row for every
    repeated update of a device that the coordinator discarded.
``egress``
    the catalogue of every device->coordinator payload as the coordinator received it:
    round, message type, node, device (``NULL`` for a cohort sum), record, entry name,
    kind (``array``/``metric``), shape, dtype, bytes and ``protection``, what protects
    the value (the egress catalogue, :mod:`fedpers.client.egress`; empty when the entry
    is not on it). The audit checks it. Node ids
    are Flower's unsigned 64-bit ids, stored as text.
``models``
    the model registry: round, file path, SHA-256, metrics, creation time and an
    ``is_latest`` flag, from which the API serves the latest global model.

Every round is written in one transaction (round, participants and egress together), so
a reader never sees a half-written round.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from fedpers.privacy.errors import StoreError
from fedpers.server.checkpoint import atomic_write_bytes, atomic_write_json
from fedpers.server.run_dir import RunDirectory

__all__ = [
    "EgressRecord",
    "ParticipantRecord",
    "RoundRecord",
    "RoundReport",
    "RunDB",
]

migrations = Migrations("fedpers.rundb")

#: The ``privacy`` key of the final metrics, written last by :meth:`RunDB.write_final`.
_FINAL_ENTRY = "final_metrics"


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    """Create the run database's tables."""
    db.table("config").create({"key": str, "value": str}, pk="key")
    db.table("privacy").create({"key": str, "value": str}, pk="key")
    db.table("rounds").create(
        {
            "round": int,
            "status": str,
            "reason": str,
            "sampled": int,
            "participants": int,
            "dropped": int,
            "refused": int,
            "noise_multiplier": float,
            "noise_std": float,
            "clip_norm": float,
            "sample_rate": float,
            "clipped_fraction": float,
            "norm_min": float,
            "norm_median": float,
            "norm_mean": float,
            "norm_max": float,
            "epsilon": float,
            "delta": float,
            "metrics": str,
            "wall_seconds": float,
            "started_at": float,
        },
        pk="round",
    )
    db.table("participants").create(
        {
            "id": int,
            "round": int,
            "device_id": int,
            "node_id": str,
            "status": str,
            "reason": str,
        },
        pk="id",
    )
    db.table("participants").create_index(["round", "device_id"])
    db.table("egress").create(
        {
            "id": int,
            "round": int,
            "message_type": str,
            "node_id": str,
            "device_id": int,
            "record": str,
            "name": str,
            "kind": str,
            "shape": str,
            "dtype": str,
            "bytes": int,
        },
        pk="id",
    )
    db.table("egress").create_index(["round"])
    db.table("models").create(
        {
            "round": int,
            "path": str,
            "sha256": str,
            "metrics": str,
            "created_at": float,
            "is_latest": int,
        },
        pk="round",
    )


@migrations()
def m002_egress_protection(db: sqlite_utils.Database) -> None:
    """Record what protects each egress entry (the egress catalogue's class)."""
    db.table("egress").add_column("protection", str)


@dataclass(frozen=True)
class ParticipantRecord:
    """What happened to one sampled device in one round."""

    device_id: int
    status: str
    reason: str | None = None
    node_id: int | None = None


@dataclass(frozen=True)
class EgressRecord:
    """One entry of one record of a device->coordinator payload."""

    message_type: str
    node_id: int | None
    device_id: int | None
    record: str
    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    protection: str = ""
    """What protects the value (:func:`fedpers.client.egress.protection_of`; ``""``: not
    on the egress catalogue)."""


@dataclass(frozen=True)
class RoundRecord:
    """The summary of one round as the run database stores it.

    ``epsilon`` is ``None`` for a non-private run (never a number then).
    """

    round: int
    status: str
    reason: str | None = None
    sampled: int = 0
    participants: int = 0
    dropped: int = 0
    refused: int = 0
    noise_multiplier: float | None = None
    noise_std: float | None = None
    clip_norm: float | None = None
    sample_rate: float | None = None
    clipped_fraction: float | None = None
    norm_min: float | None = None
    norm_median: float | None = None
    norm_mean: float | None = None
    norm_max: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    started_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The flat JSON object written to ``metrics.jsonl`` (metrics inlined)."""
        row = {k: v for k, v in asdict(self).items() if k != "metrics"}
        row.update(self.metrics)
        return {k: _finite_or_none(v) for k, v in row.items()}


@dataclass(frozen=True)
class RoundReport:
    """One round as the strategy reports it and the run database records it.

    Attributes:
        record: the round's summary row (the coordinator adds evaluation metrics and
            the wall time before writing it).
        participants: one row per sampled device (plus discarded duplicates).
        egress: the catalogue of every payload the coordinator received in the round.
    """

    record: RoundRecord
    participants: list[ParticipantRecord] = field(default_factory=list)
    egress: list[EgressRecord] = field(default_factory=list)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False, default=str)


def _table_row(round_: int, record: ParticipantRecord | EgressRecord) -> dict[str, Any]:
    """A participant or egress record as its table's row in round ``round_``.

    Node ids are Flower's unsigned 64-bit ids, stored as text (SQLite integers are signed);
    an egress entry's shape is stored as a JSON list and its size as ``bytes``.
    """
    row = {"round": round_, **vars(record)}  # the record's fields (a shallow copy)
    row["node_id"] = None if record.node_id is None else str(record.node_id)
    if isinstance(record, EgressRecord):
        row["shape"] = json.dumps(list(record.shape))
        row["bytes"] = row.pop("nbytes")
    return row


def _with_metrics_decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``rounds`` or ``models`` row with its JSON ``metrics`` column decoded."""
    return {**row, "metrics": json.loads(row["metrics"] or "{}")}


class RunDB:
    """The run database of one run directory.

    Example:
        >>> import tempfile
        >>> with RunDB.open(Path(tempfile.mkdtemp())) as db:
        ...     db.write_config({"rounds": 3})
        ...     db.read_config()["rounds"]
        3
    """

    def __init__(self, run_dir: Path, db: sqlite_utils.Database) -> None:
        self.run_dir = run_dir
        self.files = RunDirectory(run_dir)
        self.db = db

    @classmethod
    def open(cls, run_dir: Path) -> RunDB:
        """Open (creating and migrating where needed) ``run_dir/run.db`` in WAL mode."""
        run = RunDirectory.create(run_dir)
        try:
            db = sqlite_utils.Database(run.run_db)
            db.enable_wal()
            db.execute("PRAGMA synchronous=NORMAL")
            migrations.apply(db)
        except Exception as exc:
            raise StoreError(f"{run.run_db}: cannot open run database ({exc})") from exc
        return cls(run.root, db)

    @classmethod
    def open_readonly(cls, run_dir: Path) -> RunDB:
        """Open ``run_dir/run.db`` for reading only, writing nothing in the run directory.

        A closed run (no ``-wal`` file) is opened immutable, which creates no ``-wal`` or
        ``-shm`` files; a live (or crashed) run's ``-wal`` is read as it stands.

        Raises:
            StoreError: the run directory has no ``run.db``, or it is not a readable
                SQLite database.
        """
        run = RunDirectory(run_dir)
        path = run.run_db
        if not path.is_file():
            raise StoreError(f"{path}: no run database")
        live = path.with_name(path.name + "-wal").exists()
        uri = f"{path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"
        try:
            conn = sqlite3.connect(uri, uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open run database read-only ({exc})") from exc
        return cls(run.root, sqlite_utils.Database(conn))

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> RunDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration and privacy parameters -------------------------------------------

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Store the run configuration in ``config`` and ``config.json``."""
        with self.db.atomic():
            self.db.table("config").upsert_all(
                [{"key": k, "value": _dumps(v)} for k, v in config.items()], pk="key"
            )
        atomic_write_json(self.files.config, dict(config))

    def read_config(self) -> dict[str, Any]:
        """The stored run configuration."""
        return {r["key"]: json.loads(r["value"]) for r in self.db.table("config").rows}

    def write_privacy(self, params: Mapping[str, Any]) -> None:
        """Store (or update) the privacy parameters."""
        with self.db.atomic():
            self.db.table("privacy").upsert_all(
                [{"key": k, "value": _dumps(_finite_or_none(v))} for k, v in params.items()],
                pk="key",
            )

    def read_privacy(self) -> dict[str, Any]:
        """The stored privacy parameters."""
        return {r["key"]: json.loads(r["value"]) for r in self.db.table("privacy").rows}

    def write_final(self, metrics: Mapping[str, Any], stopped_reason: str | None) -> None:
        """Store the run's final metrics and why it stopped early: a run's last write."""
        self.write_privacy({"stopped_reason": stopped_reason, _FINAL_ENTRY: dict(metrics)})

    def finished(self) -> bool:
        """Whether the coordinator has made the run's last write (:meth:`write_final`).

        A cheap read, for polling a live run; ``False`` before the tables exist.

        Raises:
            StoreError: the database cannot be read.
        """
        try:
            if not self.db.table("privacy").exists():
                return False
            rows = self.db.execute("SELECT 1 FROM privacy WHERE key = ?", [_FINAL_ENTRY])
            return rows.fetchone() is not None
        except sqlite3.Error as exc:
            raise StoreError(f"{self.files.run_db}: cannot read the run database ({exc})") from exc

    # -- rounds ----------------------------------------------------------------------------

    def record_round(
        self,
        record: RoundRecord,
        participants: Sequence[ParticipantRecord] = (),
        egress: Iterable[EgressRecord] = (),
    ) -> None:
        """Write one round (summary, participants, egress) in one transaction.

        Also appends the round's JSON object to ``metrics.jsonl``. Writing a round that
        already exists replaces it (a resumed run re-running a round it lost).
        """
        row = asdict(record)
        row["metrics"] = _dumps({k: _finite_or_none(v) for k, v in record.metrics.items()})
        row = {k: _finite_or_none(v) for k, v in row.items()}
        with self.db.atomic():
            self._delete_round(record.round)
            self.db.table("rounds").insert(row)
            self.db.table("participants").insert_all(
                (_table_row(record.round, p) for p in participants), batch_size=1000
            )
            self.db.table("egress").insert_all(
                (_table_row(record.round, e) for e in egress), batch_size=1000
            )
        with open(self.files.metrics, "a", encoding="utf-8") as fh:
            fh.write(_dumps(record.to_json()) + "\n")

    def _delete_round(self, round_: int) -> None:
        for table in ("rounds", "participants", "egress"):
            if self.db.table(table).exists():
                self.db.execute(f"DELETE FROM [{table}] WHERE round = ?", [round_])

    def rounds(self) -> list[dict[str, Any]]:
        """Every stored round, in order, with ``metrics`` decoded."""
        return [
            _with_metrics_decoded(r) for r in self.db.table("rounds").rows_where(order_by="round")
        ]

    def participants(self, round_: int | None = None) -> list[dict[str, Any]]:
        """Participant rows, of one round or all."""
        table = self.db.table("participants")
        if round_ is None:
            return list(table.rows_where(order_by="round, device_id, id"))
        return list(table.rows_where("round = ?", [round_], order_by="device_id, id"))

    def egress(self, round_: int | None = None) -> Iterator[dict[str, Any]]:
        """Egress catalogue rows, of one round or all."""
        table = self.db.table("egress")
        rows: Iterator[dict[str, Any]]
        if round_ is None:
            rows = table.rows_where(order_by="id")
        else:
            rows = table.rows_where("round = ?", [round_], order_by="id")
        return rows

    def truncate_after(self, round_: int) -> None:
        """Forget every round after ``round_`` (used on resume) and rewrite metrics.jsonl."""
        with self.db.atomic():
            for table in ("rounds", "participants", "egress", "models"):
                self.db.execute(f"DELETE FROM [{table}] WHERE round > ?", [round_])
            self.db.execute("UPDATE models SET is_latest = 0")
            self.db.execute(
                "UPDATE models SET is_latest = 1 WHERE round = (SELECT MAX(round) FROM models)"
            )
        lines = [
            _dumps(RoundRecord(**{**r, "metrics": r["metrics"]}).to_json()) + "\n"
            for r in self.rounds()
        ]
        atomic_write_bytes(self.files.metrics, "".join(lines).encode())

    # -- model registry --------------------------------------------------------------------

    def register_model(
        self, round_: int, path: Path, sha256: str, metrics: Mapping[str, float]
    ) -> None:
        """Add the model of ``round_`` to the registry and mark it as the latest."""
        with self.db.atomic():
            self.db.execute("UPDATE models SET is_latest = 0")
            self.db.table("models").upsert(
                {
                    "round": round_,
                    "path": str(path),
                    "sha256": sha256,
                    "metrics": _dumps({k: _finite_or_none(v) for k, v in metrics.items()}),
                    "created_at": time.time(),
                    "is_latest": 1,
                },
                pk="round",
            )

    def models(self) -> list[dict[str, Any]]:
        """Every registry row, in round order (``metrics`` decoded)."""
        return [
            _with_metrics_decoded(r) for r in self.db.table("models").rows_where(order_by="round")
        ]

    def latest_model(self) -> dict[str, Any] | None:
        """The registry row of the latest global model (``metrics`` decoded), if any."""
        rows = list(self.db.table("models").rows_where("is_latest = 1", limit=1))
        return _with_metrics_decoded(rows[0]) if rows else None
