"""The fixture the device store tests share: a fresh store that may keep events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedpers.client.consent import ConsentManager
from fedpers.client.store import EventStore
from fedpers.privacy.consent import Purpose


@pytest.fixture
def store(tmp_path: Path, store_items: list[str]) -> Iterator[EventStore]:
    """A new store over the test module's ``store_items`` with P1 and P3 granted."""
    s = EventStore.create(tmp_path / "device.db", store_items)
    ConsentManager(s).grant(Purpose.STORE_ACCESS, Purpose.CREATE_PROFILES)
    yield s
    s.close()
