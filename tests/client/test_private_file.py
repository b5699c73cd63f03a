"""Atomic, owner-only writes on the device."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fedpers.client.private_file import private_file


def test_the_file_replaces_the_destination_readable_by_the_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "export.json"
    target.write_text("old")
    with private_file(target, "w") as handle:
        handle.write("new")
        assert target.read_text() == "old"  # nothing is visible before the block ends
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), private_file(target, "wb", suffix=".npz") as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
