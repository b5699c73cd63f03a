"""Bad input and faults: clear errors, nothing stored, no silent reset, no lost event."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fedpers.client.consent import ConsentManager
from fedpers.client.store import Event, EventStore, EventType, parse_events_jsonl
from fedpers.privacy.consent import Purpose
from fedpers.privacy.errors import DataError, StoreCorruptedError, StoreError

ITEMS = [f"i{n}" for n in range(50)]
GOOD: dict[str, Any] = {
    "item": "i1",
    "event_type": "click",
    "value": 1.0,
    "timestamp": 1_700_000_000,
    "context": {"hour": 20, "locale": "en-GB"},
}


@pytest.fixture
def store_items() -> list[str]:
    """The catalogue of the ``store`` fixture (conftest.py)."""
    return ITEMS


def test_a_good_event_parses() -> None:
    event = Event.from_json(GOOD, ITEMS)
    assert event == Event("i1", EventType.CLICK, 1.0, 1_700_000_000.0, GOOD["context"])
    iso = Event.from_json({**GOOD, "timestamp": "2023-11-14T22:13:20Z"}, ITEMS)
    assert iso.timestamp == 1_700_000_000.0
    assert Event.from_json({**GOOD, "item": 7}, ["7"]).item == "7"
    assert Event.from_json({k: v for k, v in GOOD.items() if k != "value"}, ITEMS).value == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_type": "like"}, "unknown event type 'like'"),
        ({"event_type": None}, "unknown event type"),
        ({"item": "i999"}, "unknown item 'i999'"),
        ({"item": ""}, "unknown item"),
        ({"item": True}, "item must be a string"),
        ({"timestamp": "yesterday"}, "bad timestamp"),
        ({"timestamp": "2023-11-14T22:13:20"}, "without a UTC offset"),
        ({"timestamp": -1}, "bad timestamp"),
        ({"timestamp": math.nan}, "bad timestamp"),
        ({"timestamp": 1_700_000_000_000}, "milliseconds"),
        ({"timestamp": True}, "bad timestamp"),
        ({"value": "five"}, "value must be a number"),
        ({"value": math.inf}, "finite"),
        ({"event_type": "dwell", "value": -3}, "dwell"),
        ({"context": [1, 2]}, "context must be a JSON object"),
        ({"context": {"x": math.nan}}, "not JSON-serialisable"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_events_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        Event.from_json({**GOOD, **change}, ITEMS)


@pytest.mark.parametrize("missing", ["item", "event_type", "timestamp"])
def test_missing_fields_are_named(missing: str) -> None:
    with pytest.raises(DataError, match=f"missing field '{missing}'"):
        Event.from_json({k: v for k, v in GOOD.items() if k != missing}, ITEMS)


def test_rating_needs_a_value() -> None:
    with pytest.raises(DataError, match="rating event needs a 'value'"):
        Event.from_json({"item": "i1", "event_type": "rating", "timestamp": 1.0}, ITEMS)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(DataError, match="unknown event type"):
        Event("i1", "teleport", 1.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="bad timestamp"):
        Event("i1", EventType.VIEW, 1.0, float("inf"))


def test_one_bad_event_in_a_batch_stores_nothing(store: EventStore) -> None:
    store.append(Event("i0", EventType.VIEW, 1.0, 1.0))
    good = [Event.from_json(GOOD, ITEMS)] * 5
    unknown = Event("not-in-catalogue", EventType.VIEW, 1.0, 2.0)
    with pytest.raises(DataError, match="event 3: unknown item 'not-in-catalogue'"):
        store.append_many([*good[:3], unknown, *good[3:]])
    with pytest.raises(DataError, match="event 1: expected an Event"):
        store.append_many([good[0], GOOD])  # type: ignore[list-item]
    assert store.count() == 1


def test_wrong_json_names_file_and_line() -> None:
    lines = [json.dumps(GOOD), "", json.dumps(GOOD), "{not json"]
    with pytest.raises(DataError, match=r"^events\.jsonl:4: invalid JSON"):
        parse_events_jsonl(lines, ITEMS, source="events.jsonl")
    lines = [json.dumps(GOOD), json.dumps({**GOOD, "event_type": "like"})]
    with pytest.raises(DataError, match=r"^events\.jsonl:2: unknown event type"):
        parse_events_jsonl(lines, ITEMS, source="events.jsonl")
    with pytest.raises(DataError, match=r"^e:1: an event is a JSON object"):
        parse_events_jsonl(["[1, 2]"], ITEMS, source="e")


def _assert_refused_untouched(path: Path, error: type[Exception], match: str) -> None:
    before = path.read_bytes()
    for _ in range(3):  # the same clear error every time: no crash loop, no reset
        with pytest.raises(error, match=match):
            EventStore.open(path)
    assert path.read_bytes() == before
    assert not Path(str(path) + "-wal").exists()


def test_a_file_that_is_not_sqlite_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    path.write_bytes(b"this is not a database, just some bytes\n" * 200)
    _assert_refused_untouched(path, StoreCorruptedError, f"{path}.*corrupted")


def test_an_empty_store_file_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    path.touch()
    _assert_refused_untouched(path, StoreCorruptedError, f"{path}.*empty")


def test_a_store_with_a_damaged_header_is_reported_as_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    EventStore.create(path, ITEMS).close()
    data = bytearray(path.read_bytes())
    data[0:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))
    _assert_refused_untouched(path, StoreCorruptedError, str(path))


def test_damaged_pages_are_found_and_named(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    with EventStore.create(path, ITEMS) as s:
        ConsentManager(s).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
        s.append_many([Event(ITEMS[n % 50], EventType.VIEW, 1.0, n, {"n": n}) for n in range(5000)])
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    for offset in range(3 * page, len(data) - page, 5 * page):
        data[offset : offset + page] = bytes([0xA5]) * page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match=str(path)), EventStore.open(path) as damaged:
        damaged.check_integrity()


def test_corruption_found_while_reading_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    with EventStore.create(path, ITEMS) as s:
        ConsentManager(s).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
        s.append_many([Event(ITEMS[n % 50], EventType.VIEW, 1.0, n, {"n": n}) for n in range(5000)])
    with EventStore.open(path) as s:
        root = s._db.conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'events'"
        ).fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (root - 1) * 4096
    data[start : start + 4096] = bytes([0xFF]) * 4096  # the events table's root page
    path.write_bytes(bytes(data))
    with EventStore.open(path) as damaged, pytest.raises(StoreCorruptedError, match=str(path)):
        damaged.history()


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a regular file"):
        EventStore.open(tmp_path)


_WRITER = textwrap.dedent(
    """
    import sys
    from fedpers.client.store import Event, EventStore, EventType

    store = EventStore.open(sys.argv[1])
    n = 0
    while True:
        event = Event(f"i{n % 50}", EventType.VIEW, 1.0, 1_700_000_000.0 + n, {"seq": n})
        event_id = store.append(event)
        print(event_id, n, flush=True)  # acknowledged: append() has returned
        n += 1
    """
)


def test_sigkill_during_appends_loses_no_acknowledged_event(tmp_path: Path) -> None:
    path = tmp_path / "device.db"
    with EventStore.create(path, ITEMS) as s:
        ConsentManager(s).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    acknowledged: dict[int, int] = {}
    try:
        while len(acknowledged) < 1000:
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
            event_id, seq = map(int, line.split())
            acknowledged[event_id] = seq
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is appending as fast as it can
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill was never acknowledged
            acknowledged[int(parts[0])] = int(parts[1])
    with EventStore.open(path) as reopened:
        reopened.check_integrity()
        rows = dict(
            reopened._db.conn.execute(
                "SELECT id, CAST(json_extract(context, '$.seq') AS INTEGER) FROM events"
            ).fetchall()
        )
    missing = {i: s for i, s in acknowledged.items() if rows.get(i) != s}
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert len(rows) >= len(acknowledged)
