"""A bounded per-process cache of open device stores.

Opening and closing a SQLite file in WAL mode costs milliseconds of ``fsync`` per device
and round, so a node keeps its devices' stores open in one least-recently-used cache per
process (:data:`POOL`); nothing private is kept in Flower's ``Context.state``, which
Flower ships with every message.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from fedpers.client.store import EventStore

__all__ = ["POOL", "StorePool"]


class StorePool:
    """A bounded LRU of open device stores, one per process.

    Example:
        >>> pool = StorePool(2)
        >>> len(pool)
        0
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._stores: OrderedDict[Path, EventStore] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stores)

    def get(self, path: Path) -> EventStore:
        """The open store at ``path`` (opened on first use, least recently used evicted).

        Raises:
            StoreError: when the store cannot be opened.
        """
        with self._lock:
            store = self._stores.get(path)
            if store is not None:
                self._stores.move_to_end(path)
                return store
            store = EventStore.open(path)
            self._stores[path] = store
            while len(self._stores) > self.capacity:
                _, old = self._stores.popitem(last=False)
                old.close()
            return store

    def discard(self, path: Path) -> None:
        """Close and forget the store at ``path`` (after an error on it)."""
        with self._lock:
            store = self._stores.pop(path, None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        """Close every cached store."""
        with self._lock:
            stores = list(self._stores.values())
            self._stores.clear()
        for store in stores:
            store.close()


POOL = StorePool(1024)
"""The process's store cache (its capacity set from the node's settings)."""
