"""Fixtures the integration tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpers.simulation.data import SyntheticConfig, generate_synthetic, write_interaction_log


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic interaction log (24 users, 40 items) written as CSV."""
    data = generate_synthetic(SyntheticConfig(n_users=24, n_items=40, events_per_user=8, seed=2))
    return write_interaction_log(data, tmp_path_factory.mktemp("data") / "tiny.csv")
