"""Checkpoints: round trip of arrays and state trees, atomicity, corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedpers.privacy.errors import StoreCorruptedError, StoreError
from fedpers.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedpers.server.sampling import DeviceSampler, SamplingConfig, SamplingMethod


def test_round_trip_preserves_arrays_and_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rng.random(5)
    state = {
        "optimizer": {"m": [np.ones((2, 3), np.float32)], "step": 4},
        "noise_rng": rng.bit_generator.state,
        "accountant": {"history": [[1.1, 0.01, 3]]},
        "clip": 0.25,
        "label": None,
    }
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(2, np.float32)]
    save_checkpoint(tmp_path, Checkpoint(round=7, arrays=arrays, state=state))
    ck = load_checkpoint(tmp_path)
    assert ck.round == 7
    for a, b in zip(ck.arrays, arrays, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    np.testing.assert_array_equal(ck.state["optimizer"]["m"][0], np.ones((2, 3)))
    restored = np.random.default_rng()
    restored.bit_generator.state = ck.state["noise_rng"]
    assert restored.random() == rng.random()
    assert ck.state["accountant"] == {"history": [[1.1, 0.01, 3]]}
    assert ck.state["label"] is None


def test_sampler_state_resumes_the_same_stream(tmp_path: Path) -> None:
    cfg = SamplingConfig(SamplingMethod.POISSON, 50, sample_rate=0.2)
    a = DeviceSampler(cfg, seed=1)
    a.sample()
    save_checkpoint(tmp_path, Checkpoint(1, [], {"sampler": a.state_dict()}))
    b = DeviceSampler(cfg, seed=999)
    b.load_state_dict(load_checkpoint(tmp_path).state["sampler"])
    np.testing.assert_array_equal(a.sample(), b.sample())


def test_overwrite_leaves_no_temp_files(tmp_path: Path) -> None:
    for r in range(3):
        save_checkpoint(tmp_path, Checkpoint(r, [np.full(3, r, np.float32)], {}))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]
    assert load_checkpoint(tmp_path).round == 2


def test_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(StoreCorruptedError, match=r"checkpoint\.npz"):
        load_checkpoint(tmp_path)


class _Crash(Exception):
    """Stands in for the process dying right after a round was checkpointed."""


def _federation(tmp: Path, rounds: int = 4):  # type: ignore[no-untyped-def]
    from local_federation import federation_config, synthetic_split

    from fedpers.client.app import ClientSettings, make_client_app
    from fedpers.simulation.federation.population import prepare_devices

    data, split = synthetic_split(15, 25, seed=8)
    pop = prepare_devices(tmp, data, split, seed=8)
    config = federation_config(
        tmp,
        pop,
        rounds=rounds,
        num_nodes=2,
        dp="user",
        noise_multiplier=1.2,
        clip_norm=0.5,
        sample_rate=0.6,
        server_opt="fedadam",
        server_lr=0.05,
    )
    return config, make_client_app(ClientSettings(devices_dir=str(pop.devices_dir)))


def test_resume_after_a_crash_continues_exactly(tmp_path: Path) -> None:
    from local_grid import LocalGrid

    from fedpers.privacy.dp.accounting import epsilon_for
    from fedpers.server.app import run_federation
    from fedpers.server.rundb import RunDB

    whole_cfg, whole_app = _federation(tmp_path / "whole")
    whole = run_federation(LocalGrid(whole_app, 2, seed=1), whole_cfg)

    config, app = _federation(tmp_path / "crashed")

    def crash_after_round_2(summary: dict) -> None:  # type: ignore[type-arg]
        if summary["round"] == 2:
            raise _Crash

    with pytest.raises(_Crash):
        run_federation(LocalGrid(app, 2, seed=1), config, progress=crash_after_round_2)
    assert load_checkpoint(tmp_path / "crashed").round == 2
    # a fresh coordinator (new node ids), same run directory
    resumed = run_federation(LocalGrid(app, 2, seed=99), config, resume=True)
    for a, b in zip(resumed.arrays, whole.arrays, strict=True):
        np.testing.assert_array_equal(a, b)  # sampler, optimizer moments, noise: all restored
    assert resumed.epsilon == whole.epsilon
    assert resumed.epsilon == pytest.approx(epsilon_for(1.2, 0.6, 4, config.resolved_delta).epsilon)
    with RunDB.open(tmp_path / "crashed") as db:
        assert [r["round"] for r in db.rounds()] == [1, 2, 3, 4]
        assert db.latest_model()["round"] == 4  # type: ignore[index]


def test_resume_forgets_rounds_written_after_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from local_grid import LocalGrid

    import fedpers.server.app as server_app
    from fedpers.server.rundb import RunDB

    config, app = _federation(tmp_path, rounds=3)
    real_save = server_app.save_checkpoint

    def dying_save(run_dir: Path, ck: Checkpoint) -> Path:
        if ck.round == 2:
            raise _Crash  # round 2 is in run.db and metrics.jsonl, not in the checkpoint
        return real_save(run_dir, ck)

    monkeypatch.setattr(server_app, "save_checkpoint", dying_save)
    with pytest.raises(_Crash):
        server_app.run_federation(LocalGrid(app, 2, seed=1), config)
    monkeypatch.setattr(server_app, "save_checkpoint", real_save)
    with RunDB.open(tmp_path) as db:
        assert [r["round"] for r in db.rounds()] == [1, 2]
    outcome = server_app.run_federation(LocalGrid(app, 2, seed=1), config, resume=True)
    with RunDB.open(tmp_path) as db:
        rounds = db.rounds()
    assert [r["round"] for r in rounds] == [1, 2, 3]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3]
    from fedpers.privacy.dp.accounting import epsilon_for

    assert outcome.epsilon == pytest.approx(epsilon_for(1.2, 0.6, 3, config.resolved_delta).epsilon)
