"""load_dataset dispatch (the docstring examples run in tests/test_docstring_examples.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpers.privacy.errors import DataError
from fedpers.simulation.data import SyntheticConfig, load_dataset


def test_synthetic_by_name_uses_seed() -> None:
    small = SyntheticConfig(n_users=30, n_items=25, events_per_user=5)
    a = load_dataset("synthetic", synthetic=small)
    assert (a.n_users, a.n_items, a.n_interactions) == (30, 25, 150)
    b = load_dataset("synthetic", seed=3)
    c = load_dataset("synthetic", seed=3)
    d = load_dataset("synthetic", seed=4)
    assert (b.items == c.items).all()
    assert not (b.items == d.items).all()


def test_path_dispatches_to_log_reader(tmp_path: Path) -> None:
    log = tmp_path / "events.tsv"
    log.write_text("user\titem\nu1\ti1\nu2\ti1\n")
    data = load_dataset(str(log))
    assert data.name == "events.tsv" and data.n_users == 2 and data.n_items == 1
    assert load_dataset(log).n_interactions == 2


def test_ml100k_by_name() -> None:
    data = load_dataset("ml-100k")
    assert (data.n_users, data.n_items, data.n_interactions) == (943, 1682, 100_000)


def test_unknown_spec_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'ml-1m'"):
        load_dataset("ml-1m")
    with pytest.raises(DataError, match=r"no such file"):
        load_dataset(str(tmp_path / "absent.csv"))
