"""Every file of a devices folder: the public catalogue, held-out items, seeds and stores.

A devices folder (``RUN_DIR/devices`` in simulation) holds:

* ``catalogue.npz``: the public catalogue (item ids, attributes, their names and titles),
  which every device, the coordinator and the API may read;
* ``holdout/{test,valid,negatives}.npy``: simulation only, each device's held-out items
  of the leave-one-out protocol, indexed by device id;
* ``seed.npz``: simulation only, each device's interactions and simulated consent, from
  which its store is created;
* ``population.json``: simulation only, the population's size and how it was enrolled;
* ``device-NNNNNNN.db``: one on-device store per device.

Only names and paths live here (no I/O beyond listing the stores), so serving code can use
it without loading the training stack.

Example:
    >>> folder = DevicesFolder(Path("runs/r1/devices"))
    >>> folder.store(42).name
    'device-0000042.db'
    >>> folder.holdout_file("test").relative_to(folder.root).as_posix()
    'holdout/test.npy'
    >>> DevicesFolder.device_of(Path("device-0000042.db"))
    42
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedpers.client.folder_entry import FolderEntry

__all__ = ["DevicesFolder", "HoldoutSplit"]

HoldoutSplit = Literal["test", "valid", "negatives"]
"""The held-out arrays of a simulated population (one row per device)."""

_STORE_NAME = re.compile(r"^device-(\d+)\.db$")


@dataclass(frozen=True)
class DevicesFolder:
    """The paths of one devices folder (nothing is read or created on construction).

    Attributes:
        root: the folder.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    catalogue = FolderEntry("catalogue.npz", "the public catalogue")
    holdout = FolderEntry("holdout", "each device's held-out items (simulation only)")

    def holdout_file(self, split: HoldoutSplit) -> Path:
        """``holdout/<split>.npy``: one held-out array, indexed by device id."""
        return self.holdout / f"{split}.npy"

    seed = FolderEntry("seed.npz", "the population's interactions and simulated consent")
    population = FolderEntry("population.json", "the population's size and enrolment")

    def store(self, device_id: int) -> Path:
        """The store file of ``device_id`` (``device-0000042.db``)."""
        return self.root / f"device-{int(device_id):07d}.db"

    @staticmethod
    def device_of(path: Path) -> int | None:
        """The device id a store file is named for, ``None`` when it is not a store name."""
        match = _STORE_NAME.match(Path(path).name)
        return None if match is None else int(match.group(1))

    def stores(self) -> dict[int, Path]:
        """``{device id: store file}`` of every store in the folder, by device id."""
        if not self.root.is_dir():
            return {}
        found = {}
        for path in self.root.iterdir():
            device = self.device_of(path)
            if device is not None and path.is_file():
                found[device] = path
        return dict(sorted(found.items()))
