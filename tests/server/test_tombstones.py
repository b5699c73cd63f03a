"""Erased users are excluded from later federation rounds (GDPR Art. 17).

The API erases a user (``consent_store.erase_user``, the code ``DELETE /v1/users/{id}``
runs) in the run's ``api.db``; a real federation over the in-process grid, with the real
ClientApp, then never trains that device again and records why in ``run.db``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from local_federation import client_grid, federation_config, synthetic_split

from fedpers.privacy.errors import StoreError
from fedpers.server.api.consent_store import change_consent, erase_user
from fedpers.server.api.consent_store import tombstone_of as api_tombstone_of
from fedpers.server.api.db import open_api_db
from fedpers.server.app import run_federation
from fedpers.server.config import FederationConfig
from fedpers.server.rundb import RunDB
from fedpers.server.sampling import DeviceSampler, SamplingConfig, SamplingMethod
from fedpers.server.tombstone_sampler import ErasureAwareSampler
from fedpers.server.tombstones import (
    ERASED_REASON,
    TombstoneReader,
    device_user_id,
    read_tombstones,
    tombstone_of,
)
from fedpers.simulation.federation.population import prepare_devices

torch.set_num_threads(1)

N = 12
KEY = b"k" * 32


def _erase(run_dir: Path, *devices: int, tenant: str = "shop") -> None:
    db = open_api_db(run_dir / "api.db")
    try:
        for d in devices:
            uid = device_user_id(d)
            change_consent(
                db, KEY, tenant, uid, "grant", [1, 5, 6, 10], policy_version="v1", source="test"
            )
            erase_user(db, KEY, tenant, uid)
    finally:
        db.conn.close()


def test_the_api_and_the_federation_agree_on_tombstones() -> None:
    for uid in ("0", "42", "u-1", "ünï"):
        assert tombstone_of(uid) == api_tombstone_of(uid)


def test_no_api_database_means_no_exclusion(tmp_path: Path) -> None:
    assert read_tombstones(tmp_path / "api.db") == frozenset()
    assert TombstoneReader.for_run(tmp_path).erased(range(5)) == []


def test_an_unreadable_api_database_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "api.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="tombstones"):
        TombstoneReader.for_run(tmp_path).erased([1])


def test_sampler_draws_the_same_cohorts_minus_the_erased(tmp_path: Path) -> None:
    _erase(tmp_path, 2, 5, tenant="a")
    _erase(tmp_path, 7, tenant="b")  # any tenant's erasure excludes the device
    config = SamplingConfig(SamplingMethod.POISSON, 20, sample_rate=0.5)
    plain = DeviceSampler(config, seed=3)
    aware = ErasureAwareSampler.for_run(config, 3, tmp_path)
    seen: set[int] = set()
    for _ in range(10):
        full = plain.sample()
        got = aware.sample()
        excluded = aware.pop_excluded()
        assert set(got.tolist()) == set(full.tolist()) - {2, 5, 7}
        assert set(excluded) == set(full.tolist()) & {2, 5, 7}
        seen |= set(excluded)
    assert seen == {2, 5, 7}
    assert aware.state_dict() == plain.state_dict()  # a resumed run draws the same cohorts


def _federation(run_dir: Path, progress: Any = None) -> FederationConfig:
    data, split = synthetic_split(N, 20, seed=4)
    pop = prepare_devices(run_dir, data, split, seed=4)
    config = federation_config(
        run_dir,
        pop,
        rounds=2,
        dim=4,
        mode="cohort",
        num_nodes=2,
        local={"epochs": 1, "user_warmup": 1},
    )
    run_federation(client_grid(config, seed=5), config, progress=progress)
    return config


def test_erased_devices_are_excluded_from_later_rounds(tmp_path: Path) -> None:
    _erase(tmp_path, 3, 8)

    def erase_after_round_one(summary: dict[str, Any]) -> None:
        if summary["round"] == 1:
            _erase(tmp_path, 5)

    _federation(tmp_path, progress=erase_after_round_one)
    with RunDB.open(tmp_path) as db:
        rounds, parts = db.rounds(), db.participants()
    assert [r["status"] for r in rounds] == ["completed", "completed"]
    by_round: dict[int, dict[int, tuple[str, str | None]]] = {}
    for p in parts:
        by_round.setdefault(p["round"], {})[p["device_id"]] = (p["status"], p["reason"])
    erased = ("refused", ERASED_REASON)
    assert by_round[1][3] == erased and by_round[1][8] == erased
    assert by_round[1][5][0] == "accepted"  # not erased yet
    assert by_round[2][3] == erased and by_round[2][8] == erased and by_round[2][5] == erased
    accepted = {d for d, (s, _) in by_round[2].items() if s == "accepted"}
    assert accepted == set(range(N)) - {3, 5, 8}
    assert [r["sampled"] for r in rounds] == [N, N]
    assert [r["refused"] for r in rounds] == [2, 3]
    assert [r["participants"] for r in rounds] == [N - 2, N - 3]
