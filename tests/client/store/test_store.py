"""EventStore: the device's SQLite file and its operations."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.consent import ConsentManager
from fedpers.client.store import (
    SCHEMA_VERSION,
    Event,
    EventStore,
    EventType,
    LedgerEntry,
)
from fedpers.privacy.consent import ConsentState, Purpose
from fedpers.privacy.errors import DataError, StoreError

ITEMS = [f"item-{i}" for i in range(20)]
T0 = 1_700_000_000.0


def _event(i: int, item: str | None = None, ts: float | None = None) -> Event:
    return Event(
        item or ITEMS[i % len(ITEMS)],
        EventType.CLICK,
        1.0,
        T0 + i if ts is None else ts,
        {"hour": i % 24, "device": "phone"},
    )


@pytest.fixture
def store_items() -> list[str]:
    """The catalogue of the ``store`` fixture (conftest.py)."""
    return ITEMS


def test_create_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    with EventStore.create(path, ITEMS) as created:
        assert created.catalogue() == ITEMS
        assert created.schema_version == SCHEMA_VERSION
    with EventStore.open(path) as reopened:
        assert reopened.catalogue() == ITEMS
        info = reopened.info()
    assert info["journal_mode"] == "wal"
    assert info["events"] == 0
    assert info["catalogue_size"] == len(ITEMS)


def test_pragmas_for_durability_and_integrity(store: EventStore) -> None:
    conn = store._db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    EventStore.create(path, ITEMS).close()
    with pytest.raises(StoreError, match="already exists"):
        EventStore.create(path, ["other"])
    with EventStore.open(path) as s:
        assert s.catalogue() == ITEMS


def test_open_missing_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(StoreError, match="no such store"):
        EventStore.open(path)
    assert not path.exists()


def test_open_refuses_a_foreign_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a fedpers device store"):
        EventStore.open(path)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {"notes"}


@pytest.mark.parametrize("catalogue", [[], ["a", "a"], ["a", ""], [" a"], ["a", 3]])
def test_bad_catalogues_are_rejected(tmp_path: Path, catalogue: list[object]) -> None:
    with pytest.raises(DataError):
        EventStore.create(tmp_path / "device.db", catalogue)  # type: ignore[arg-type]
    assert not (tmp_path / "device.db").exists()


def test_append_recent_history(store: EventStore) -> None:
    first = store.append(_event(0))
    second = store.append(_event(1))
    assert second > first
    store.append_many([_event(i) for i in range(2, 10)])
    assert store.count() == 10
    recent = store.recent(3)
    assert [e.timestamp for e in recent] == [T0 + 7, T0 + 8, T0 + 9]
    assert recent[-1] == _event(9)
    assert store.history() == [ITEMS[i] for i in range(10)]
    indices = store.history_indices()
    assert indices.dtype == np.int64
    assert indices.tolist() == list(range(10))
    assert store.recent(0) == []
    with pytest.raises(DataError):
        store.recent(-1)


def test_history_is_in_time_order_not_arrival_order(store: EventStore) -> None:
    store.append(_event(0, item=ITEMS[5], ts=T0 + 50))
    store.append(_event(1, item=ITEMS[3], ts=T0 + 10))
    store.append(_event(2, item=ITEMS[4], ts=T0 + 10))  # same time: arrival breaks ties
    assert store.history() == [ITEMS[3], ITEMS[4], ITEMS[5]]
    assert store.history_indices().tolist() == [3, 4, 5]


def test_purge_older_than(store: EventStore) -> None:
    store.append_many([_event(i) for i in range(10)])
    assert store.purge_older_than(T0 + 4) == 4
    assert store.count() == 6
    assert store.recent(1)[0].timestamp == T0 + 9
    assert store.purge_older_than(T0) == 0
    with pytest.raises(DataError):
        store.purge_older_than(float("nan"))


def test_new_global_model_reorders_the_catalogue(store: EventStore) -> None:
    store.append_many([_event(0, item="item-0"), _event(1, item="item-1")])
    new_order = ["item-1", "item-new", *ITEMS[2:]]  # item-0 dropped, item-new added
    store.set_catalogue(new_order)
    assert store.catalogue() == new_order
    assert store.history() == ["item-0", "item-1"]
    assert store.history_indices().tolist() == [0]  # item-1 is row 0 now
    store.append(_event(2, item="item-new"))
    with pytest.raises(DataError, match="unknown item 'item-0'"):
        store.append(_event(3, item="item-0"))
    assert store.count() == 3


def test_catalogue_change_by_another_connection_is_seen(store: EventStore) -> None:
    with EventStore.open(store.path) as other:
        other.set_catalogue(["fresh", *ITEMS])
    store.append(_event(0, item="fresh"))
    assert store.history() == ["fresh"]


def test_consent_persists_with_its_log(store: EventStore) -> None:
    manager = ConsentManager(store, clock=lambda: 123.0)
    manager.grant("P6", 10)
    manager.withdraw(Purpose.CREATE_PROFILES)
    manager.set_gpc(True)
    with EventStore.open(store.path) as reopened:
        state = reopened.load_consent()
        log = reopened.consent_log()
    assert state == ConsentState(
        frozenset({Purpose.STORE_ACCESS, Purpose.USE_PROFILES, Purpose.DEVELOP_SERVICES}),
        gpc=True,
        updated_at=123.0,
    )
    assert [e.action for e in log] == ["grant", "grant", "withdraw", "gpc_on"]
    assert log[1].purposes == {Purpose.USE_PROFILES, Purpose.DEVELOP_SERVICES}
    assert log[2].granted == state.granted
    assert manager.log() == log


def test_concurrent_consent_changes_are_not_lost(store: EventStore) -> None:
    other = EventStore.open(store.path)
    barrier = threading.Barrier(2)

    def grant(target: EventStore, purpose: Purpose) -> None:
        barrier.wait()
        ConsentManager(target).grant(purpose)

    threads = [
        threading.Thread(target=grant, args=(store, Purpose.USE_PROFILES)),
        threading.Thread(target=grant, args=(other, Purpose.DEVELOP_SERVICES)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert {Purpose.USE_PROFILES, Purpose.DEVELOP_SERVICES} <= store.load_consent().granted


def test_user_vector_and_personal_head(store: EventStore) -> None:
    assert store.load_user_vector() is None
    assert store.load_personal_head() is None
    vec = np.linspace(-1, 1, 16)
    store.save_user_vector(vec)
    loaded = store.load_user_vector()
    assert loaded is not None
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, vec.astype(np.float32))
    store.save_personal_head(b"\x00\x01head")
    store.save_user_vector(np.ones(8))
    assert store.load_personal_head() == b"\x00\x01head"
    assert store.load_user_vector().tolist() == [1.0] * 8  # type: ignore[union-attr]
    for bad in (np.zeros((2, 2)), [], [float("nan")], ["x"]):
        with pytest.raises(DataError):
            store.save_user_vector(bad)


def _entry(round_: int, epsilon: float) -> LedgerEntry:
    return LedgerEntry(round_, epsilon, 1e-5, 1.1, 0.05, 40, "rdp", T0 + round_)


def test_ledger_keeps_rounds_faithfully(store: EventStore) -> None:
    assert store.epsilon_spent() == 0.0
    store.append_ledger(_entry(3, 0.8))
    store.append_ledger(_entry(1, 0.5))
    assert [e.round for e in store.ledger()] == [1, 3]
    assert store.ledger()[0] == _entry(1, 0.5)
    assert store.epsilon_spent() == 0.8
    with pytest.raises(StoreError, match="already holds round 3"):
        store.append_ledger(_entry(3, 0.9))
    assert len(store.ledger()) == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"round": -1},
        {"epsilon": -0.1},
        {"epsilon": float("inf")},
        {"delta": 1.0},
        {"sample_rate": 0.0},
        {"steps": 1.5},
        {"accountant": ""},
    ],
)
def test_ledger_entry_validation(fields: dict[str, object]) -> None:
    base: dict[str, object] = {
        "round": 1,
        "epsilon": 1.0,
        "delta": 1e-5,
        "noise_multiplier": 1.0,
        "sample_rate": 0.1,
        "steps": 10,
        "accountant": "rdp",
        "created_at": T0,
    }
    with pytest.raises(DataError):
        LedgerEntry(**{**base, **fields})  # type: ignore[arg-type]


def test_export_holds_everything_and_is_json(store: EventStore) -> None:
    store.append_many([_event(i) for i in range(3)])
    store.save_user_vector(np.arange(4))
    store.save_personal_head(b"head")
    store.append_ledger(_entry(1, 0.5))
    exported = json.loads(json.dumps(store.export()))
    assert exported["format"] == "fedpers-device-export"
    assert [e["item"] for e in exported["events"]] == ITEMS[:3]
    assert exported["events"][0] == _event(0).to_json()
    assert exported["consent"]["granted"] == [1, 5]
    assert [e["action"] for e in exported["consent_log"]] == ["grant"]
    assert exported["personal_state"]["user_vector"] == [0.0, 1.0, 2.0, 3.0]
    assert exported["personal_state"]["personal_head_base64"] == "aGVhZA=="
    assert exported["ledger"] == [_entry(1, 0.5).to_dict()]
    assert exported["store"]["catalogue_size"] == len(ITEMS)


def test_info_has_no_event_contents(store: EventStore) -> None:
    store.append(_event(0))
    text = json.dumps(store.info())
    assert ITEMS[0] not in text
    assert "phone" not in text


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = EventStore.create(tmp_path / "device.db", ITEMS)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.count()


def test_integrity_check_passes_on_a_healthy_store(store: EventStore) -> None:
    store.append_many([_event(i) for i in range(100)])
    store.check_integrity()


def test_store_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    EventStore.create(path, ITEMS).close()
    assert path.stat().st_mode & 0o077 == 0


def test_create_in_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot create"):
        EventStore.create(tmp_path / "nope" / "device.db", ITEMS)


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
contexts = st.dictionaries(
    st.text(max_size=8),
    json_scalars | st.floats(allow_nan=False, allow_infinity=False) | st.lists(json_scalars),
    max_size=4,
)
events = st.builds(
    Event,
    item=st.sampled_from(ITEMS),
    event_type=st.sampled_from(list(EventType)),
    value=st.floats(min_value=0, max_value=1e6),
    timestamp=st.floats(min_value=0, max_value=4e9),
    context=contexts,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(events, min_size=1, max_size=20))
def test_events_round_trip_through_json_and_the_store(batch: list[Event]) -> None:
    for event in batch:
        assert Event.from_json(json.loads(json.dumps(event.to_json())), ITEMS) == event
    with (
        tempfile.TemporaryDirectory() as tmp,
        EventStore.create(Path(tmp) / "device.db", ITEMS) as s,
    ):
        ConsentManager(s).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
        s.append_many(batch)
        stored = s.recent(len(batch))
    order = sorted(range(len(batch)), key=lambda i: (batch[i].timestamp, i))
    assert stored == [batch[i] for i in order]
