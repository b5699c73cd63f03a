"""``fedpers simulate`` end to end on Flower's simulation engine (Ray), in subprocesses.

Each test starts the command in its own process (Ray and its workers start and stop
with it), so stdout is exactly what a user would see.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedpers.privacy.dp.accounting import cross_check_epsilon, epsilon_for
from fedpers.server.rundb import RunDB
from fedpers.simulation.data import SyntheticConfig, generate_synthetic, write_interaction_log

REQUIRED = {
    "hr10_sampled",
    "ndcg10_sampled",
    "hr10_full",
    "ndcg10_full",
    "epsilon",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "sampling",
    "num_devices",
    "rounds",
    "seconds",
    "run_dir",
}


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = generate_synthetic(SyntheticConfig(n_users=24, n_items=40, events_per_user=8, seed=2))
    return write_interaction_log(data, tmp_path_factory.mktemp("data") / "tiny.csv")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedpers.simulation.cli.simulate", *args]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)


def test_json_prints_exactly_one_object_and_writes_the_run_dir(
    tmp_path: Path, tiny_log: Path
) -> None:
    out = tmp_path / "run"
    proc = _run("--dataset", str(tiny_log), "--rounds", "2", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert proc.stdout.strip().count("\n") == 0
    assert set(result) >= REQUIRED
    assert result["epsilon"] is None and result["delta"] is None and result["private"] is False
    assert result["sampling"] == "all" and result["sample_rate"] == 1.0
    assert result["num_devices"] == 24 and result["rounds"] == 2
    assert 0.0 <= result["hr10_sampled"] <= 1.0
    for name in ("config.json", "metrics.jsonl", "run.db", "checkpoint.npz"):
        assert (out / name).is_file(), name
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert len(list((out / "devices").glob("device-*.db"))) == 24
    # `fedpers runs list` reads the same run back, and changes nothing in it
    before = sorted(p.name for p in out.iterdir())
    listed = subprocess.run(
        [
            str(Path(sys.executable).parent / "fedpers"),
            "runs",
            "list",
            "--root",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["runs"]
    assert (row["status"], row["rounds_done"], row["rounds"], row["epsilon"]) == (
        "complete",
        2,
        2,
        None,
    )
    assert row["hr10_sampled"] == result["hr10_sampled"] and row["resumable"] is True
    assert sorted(p.name for p in out.iterdir()) == before
    with RunDB.open(out) as db:
        latest = db.latest_model()
        assert latest is not None and latest["round"] == 2 and Path(latest["path"]).is_file()
        egress = list(db.egress())
    # what the coordinator received through Ray: shared-shape arrays (and, at most,
    # participation numbers), each entry under a protection the egress catalogue lists
    assert "array" in {r["kind"] for r in egress} <= {"array", "metric"}
    assert all(r["protection"] for r in egress), egress
    config = json.loads((out / "config.json").read_text())
    n_items, dim = config["n_items"], config["dim"]
    assert {(r["name"], r["shape"], r["dtype"]) for r in egress if r["kind"] == "array"} == {
        ("item_embedding", f"[{n_items}, {dim}]", "float32"),
        ("item_bias", f"[{n_items}]", "float32"),
    }


def test_bad_options_are_one_line_errors(tmp_path: Path, tiny_log: Path) -> None:
    proc = _run("--dataset", str(tiny_log), "--dp", "user", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: user-level DP needs --epsilon or --noise-multiplier"
    ]
    assert proc.stdout == ""


@pytest.mark.slow
def test_user_level_dp_with_poisson_sampling(tmp_path: Path, tiny_log: Path) -> None:
    out = tmp_path / "dp"
    proc = _run(
        "--dataset", str(tiny_log), "--rounds", "3", "--out", str(out), "--json",
        "--dp", "user", "--epsilon", "6", "--sample-rate", "0.5", "--clip", "0.5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["private"] is True and result["sampling"] == "poisson"
    assert result["sample_rate"] == 0.5 and result["rounds"] == 3
    assert result["epsilon"] <= 6.0
    expected = epsilon_for(result["noise_multiplier"], 0.5, 3, result["delta"]).epsilon
    assert result["epsilon"] == pytest.approx(expected, rel=1e-9)
    check = cross_check_epsilon(result["noise_multiplier"], 0.5, 3, result["delta"])
    assert check.relative_difference < 0.02
    assert result["delta"] == pytest.approx(0.1 / 24)


@pytest.mark.slow
def test_node_mode_matches_cohort_mode_on_ray(tmp_path: Path, tiny_log: Path) -> None:
    import numpy as np

    from fedpers.server.checkpoint import load_checkpoint

    results = {}
    for mode in ("cohort", "node"):
        out = tmp_path / mode
        proc = _run(
            "--dataset", str(tiny_log), "--rounds", "2", "--out", str(out), "--json", "--mode", mode
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = (json.loads(proc.stdout), load_checkpoint(out).arrays)
    for a, b in zip(results["cohort"][1], results["node"][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert results["cohort"][0]["hr10_sampled"] == pytest.approx(results["node"][0]["hr10_sampled"])


@pytest.mark.slow
def test_sigkill_then_resume_neither_resets_nor_double_counts_epsilon(
    tmp_path: Path, tiny_log: Path
) -> None:
    out = tmp_path / "killed"
    args = [
        "--dataset", str(tiny_log), "--rounds", "6", "--out", str(out),
        "--dp", "user", "--noise-multiplier", "1.5", "--clip", "0.5", "--sample-rate", "0.5",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _cmd(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("the run ended before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no round completed in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its Ray processes, mid-flight
        proc.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert 2 <= killed_at < 6
    resumed = _run("--resume", str(out), "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert result["rounds"] == 6 and result["last_round"] == 6
    with RunDB.open(out) as db:
        rounds = db.rounds()
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2, 3, 4, 5, 6]
    expected = epsilon_for(1.5, 0.5, 6, 0.1 / 24).epsilon
    assert result["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert [r["epsilon"] for r in rounds] == pytest.approx(
        [epsilon_for(1.5, 0.5, k, 0.1 / 24).epsilon for k in range(1, 7)], rel=1e-9
    )


@pytest.mark.parametrize(
    ("kw", "epsilon"),
    [({}, None), ({"dp": "user", "epsilon": 8.0}, 8.0), ({"dp": "user", "epsilon": 1.0}, 1.0)],
)
def test_unset_options_follow_the_recipe_for_the_budget(
    tmp_path: Path,
    tiny_log: Path,
    kw: dict,
    epsilon: float | None,  # type: ignore[type-arg]
) -> None:
    from fedpers.simulation.federation.recipes import recommended_config
    from fedpers.simulation.federation.run import SimulateOptions, build_config

    recipe = recommended_config(epsilon)
    config, facts = build_config(SimulateOptions(dataset=str(tiny_log), **kw), tmp_path)
    assert (config.rounds, config.dim, config.server_lr) == (
        recipe.rounds,
        recipe.dim,
        recipe.server_lr,
    )
    assert config.local == recipe.local.to_dict() and facts["recipe"] == recipe.note
    if epsilon is None:
        assert config.clip_norm == 0.0 and config.noise_multiplier is None
    else:
        assert config.clip_norm == recipe.clip_norm and config.noise_multiplier is not None
        expected = recipe.optimizer_kwargs(config.noise_multiplier, 24.0)
        assert config.optimizer_kwargs == expected


def test_explicit_options_win_over_the_recipe(tmp_path: Path, tiny_log: Path) -> None:
    from fedpers.simulation.federation.run import SimulateOptions, build_config

    config, _ = build_config(
        SimulateOptions(
            dataset=str(tiny_log), rounds=3, dim=16, server_lr=5.0, local={"epochs": 1}
        ),
        tmp_path / "a",
    )
    assert (config.rounds, config.dim, config.server_lr, config.local["epochs"]) == (3, 16, 5.0, 1)
    plain, _ = build_config(SimulateOptions(dataset=str(tiny_log), recipe="none"), tmp_path / "b")
    assert (plain.rounds, plain.dim, plain.server_lr, plain.local) == (10, 32, 1.0, {})
