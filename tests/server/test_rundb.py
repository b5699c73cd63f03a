"""The run database: tables, atomic rounds, metrics.jsonl, registry, resume truncation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fedpers.privacy.errors import StoreError
from fedpers.server.rundb import EgressRecord, ParticipantRecord, RoundRecord, RunDB


def _round(r: int, epsilon: float | None = 1.5) -> RoundRecord:
    return RoundRecord(
        round=r,
        status="completed",
        sampled=3,
        participants=2,
        dropped=1,
        noise_multiplier=1.1,
        clip_norm=0.5,
        sample_rate=0.3,
        epsilon=epsilon,
        delta=1e-4,
        metrics={"hr10_sampled": 0.5, "loss": float("nan")},
        wall_seconds=0.1,
    )


def test_tables_wal_and_config(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.write_config({"rounds": 3, "dataset": "synthetic"})
        db.write_privacy({"epsilon_target": 8.0, "label": "user-level DP"})
        assert db.read_config() == {"rounds": 3, "dataset": "synthetic"}
        assert db.read_privacy()["label"] == "user-level DP"
        tables = set(db.db.table_names())
    assert {"config", "privacy", "rounds", "participants", "egress", "models"} <= tables
    conn = sqlite3.connect(tmp_path / "run.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert json.loads((tmp_path / "config.json").read_text())["dataset"] == "synthetic"


def test_round_participants_egress_and_metrics_jsonl(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.record_round(
            _round(1),
            [
                ParticipantRecord(0, "accepted", node_id=7),
                ParticipantRecord(4, "dropped", "non_finite", node_id=7),
                ParticipantRecord(5, "refused", "no_p10_consent", node_id=8),
            ],
            [EgressRecord("train", 7, 0, "update.0", "item_bias", "array", (10,), "float32", 40)],
        )
        rows = db.rounds()
        assert rows[0]["metrics"]["hr10_sampled"] == 0.5
        assert rows[0]["metrics"]["loss"] is None  # NaN never stored as a number
        assert [p["reason"] for p in db.participants(1)] == [None, "non_finite", "no_p10_consent"]
        egress = list(db.egress(1))
        assert egress[0]["shape"] == "[10]" and egress[0]["bytes"] == 40
        assert egress[0]["node_id"] == "7" and db.participants(1)[2]["node_id"] == "8"
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["round"] == 1 and obj["hr10_sampled"] == 0.5 and obj["epsilon"] == 1.5


def test_non_private_epsilon_is_null(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.record_round(_round(1, epsilon=None))
        assert db.rounds()[0]["epsilon"] is None
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["epsilon"] is None


def test_registry_latest_and_truncate(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        for r in (1, 2, 3):
            db.record_round(_round(r))
            db.register_model(r, tmp_path / f"m{r}.npz", f"sha{r}", {"hr10_sampled": r / 10})
        latest = db.latest_model()
        assert latest is not None and latest["round"] == 3 and latest["sha256"] == "sha3"
        db.truncate_after(1)
        assert [r["round"] for r in db.rounds()] == [1]
        latest = db.latest_model()
        assert latest is not None and latest["round"] == 1
        assert latest["metrics"] == {"hr10_sampled": 0.1}
        assert [(m["round"], m["metrics"]) for m in db.models()] == [(1, {"hr10_sampled": 0.1})]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1]


def test_rewriting_a_round_replaces_it(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.record_round(_round(1), [ParticipantRecord(0, "accepted")])
        db.record_round(_round(1), [ParticipantRecord(1, "accepted")])
        assert [p["device_id"] for p in db.participants()] == [1]


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.record_round(_round(1))
    with RunDB.open(tmp_path) as db:
        assert len(db.rounds()) == 1


@pytest.mark.parametrize("bad", ["not a database"])
def test_corrupt_file_is_a_store_error(tmp_path: Path, bad: str) -> None:
    (tmp_path / "run.db").write_text(bad * 200)
    with pytest.raises(StoreError, match=r"run\.db"):
        RunDB.open(tmp_path)


def test_models_in_round_order(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        assert db.models() == []
        for r in (2, 1):
            db.register_model(r, tmp_path / f"m{r}.npz", f"sha{r}", {"loss": float("inf")})
        models = db.models()
    assert [(m["round"], m["sha256"], m["is_latest"]) for m in models] == [
        (1, "sha1", 1),
        (2, "sha2", 0),
    ]
    assert models[0]["metrics"] == {"loss": None}


def test_final_entry_marks_the_run_finished(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.write_privacy({"epsilon": 1.0})
        assert not db.finished()
        db.write_final({"hr10": 0.25}, "budget spent")
        assert db.finished()
        privacy = db.read_privacy()
    assert privacy["final_metrics"] == {"hr10": 0.25}
    assert privacy["stopped_reason"] == "budget spent" and privacy["epsilon"] == 1.0


def test_open_readonly_reads_a_closed_run_and_writes_nothing(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as db:
        db.write_config({"rounds": 3})
        db.record_round(_round(1))
        db.register_model(1, tmp_path / "m1.npz", "sha1", {})
        db.write_final({}, None)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert "run.db-wal" not in before
    with RunDB.open_readonly(tmp_path) as db:
        assert db.read_config() == {"rounds": 3}
        assert [r["round"] for r in db.rounds()] == [1]
        assert [m["sha256"] for m in db.models()] == ["sha1"]
        assert db.finished()
        with pytest.raises(sqlite3.Error):
            db.write_privacy({"epsilon": 2.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_open_readonly_follows_a_live_run(tmp_path: Path) -> None:
    with RunDB.open(tmp_path) as writer:
        writer.record_round(_round(1))
        assert (tmp_path / "run.db-wal").exists()
        with RunDB.open_readonly(tmp_path) as reader:
            assert [r["round"] for r in reader.rounds()] == [1]
            assert not reader.finished()
            writer.write_final({}, None)
            assert reader.finished()


def test_open_readonly_missing_or_corrupt_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run database"):
        RunDB.open_readonly(tmp_path)
    (tmp_path / "run.db").write_text("not a database" * 200)
    with pytest.raises(StoreError, match=r"run\.db"):
        RunDB.open_readonly(tmp_path)
