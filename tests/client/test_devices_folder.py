"""DevicesFolder: the names inside a devices folder and the listing of its stores."""

from __future__ import annotations

from pathlib import Path

from fedpers.client.devices_folder import DevicesFolder


def test_names(tmp_path: Path) -> None:
    folder = DevicesFolder(tmp_path)
    assert folder.catalogue == tmp_path / "catalogue.npz"
    assert folder.seed == tmp_path / "seed.npz"
    assert folder.population == tmp_path / "population.json"
    assert folder.holdout_file("negatives") == tmp_path / "holdout" / "negatives.npy"
    assert folder.store(3) == tmp_path / "device-0000003.db"


def test_stores_lists_store_files_by_device(tmp_path: Path) -> None:
    folder = DevicesFolder(tmp_path)
    assert DevicesFolder(tmp_path / "missing").stores() == {}
    for device in (12, 3):
        folder.store(device).write_bytes(b"")
    (tmp_path / "device-0000004.db-wal").write_bytes(b"")
    (tmp_path / "device-0000005.db").mkdir()
    (tmp_path / "catalogue.npz").write_bytes(b"")
    assert folder.stores() == {3: folder.store(3), 12: folder.store(12)}
    assert DevicesFolder.device_of(Path("x/device-0000042.db")) == 42
    assert DevicesFolder.device_of(Path("device-42.db-shm")) is None
