"""The Deployment Engine ServerApp's inputs: its run config and its aggregation backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fedpers.privacy.errors import ConfigError
from fedpers.privacy.secagg import generate_keys, write_keys
from fedpers.server.app import deployment_config
from fedpers.server.config import FederationConfig
from fedpers.server.secure_aggregation import CkksAggregator, aggregation_backend


def _config(tmp_path: Path, **kw: object) -> FederationConfig:
    fields: dict[str, object] = {
        "run_dir": str(tmp_path / "run"),
        "devices_dir": str(tmp_path / "devices"),
        "rounds": 2,
        "num_devices": 10,
        "n_items": 20,
        **kw,
    }
    return FederationConfig(**fields)  # type: ignore[arg-type]


def test_run_config_must_name_a_readable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config = the path"):
        deployment_config({"resume": False})
    with pytest.raises(ConfigError, match="no such config file"):
        deployment_config({"config": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable fedpers config"):
        deployment_config({"config": str(bad)})
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a JSON object"):
        deployment_config({"config": str(bad)})
    bad.write_text(json.dumps({"run_dir": "x", "surprise": 1}))
    with pytest.raises(ConfigError, match="unknown federation config keys"):
        deployment_config({"config": str(bad)})


def test_run_config_resolves_privacy(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    config = _config(tmp_path, dp="user", target_epsilon=8.0, clip_norm=1.0)
    path.write_text(json.dumps(config.to_dict()))
    resolved = deployment_config({"config": str(path)})
    assert resolved.noise_multiplier is not None and resolved.noise_multiplier > 0
    assert resolved.delta == pytest.approx(0.1 / 10)


def test_plaintext_backend_is_none_and_he_needs_keys(tmp_path: Path) -> None:
    with aggregation_backend(_config(tmp_path)) as factory:
        assert factory is None
    with (
        pytest.raises(ConfigError, match="secagg_keys"),
        aggregation_backend(_config(tmp_path, secure_agg="he")),
    ):
        pass


def test_he_backend_starts_and_stops_the_key_holder(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, generate_keys())
    config = _config(tmp_path, secure_agg="he", secagg_keys=str(keys))
    with aggregation_backend(config) as factory:
        assert factory is not None
        agg = factory(config, ["item_bias"], [(20,)])
        assert isinstance(agg, CkksAggregator)
        holder = agg.custody["key_holder_pid"]
        assert agg.custody["coordinator_pid"] == os.getpid() != holder
        os.kill(holder, 0)  # alive while the run lasts
        assert agg.describe()["public_context_is_private"] is False
    with pytest.raises(ProcessLookupError):
        os.kill(holder, 0)


def test_the_key_holder_stops_when_the_run_fails(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keys(keys, generate_keys())
    config = _config(tmp_path, secure_agg="he", secagg_keys=str(keys))
    holder = None
    with pytest.raises(RuntimeError, match="round failed"), aggregation_backend(config) as factory:
        assert factory is not None
        holder = factory(config, ["item_bias"], [(20,)]).custody["key_holder_pid"]  # type: ignore[attr-defined]
        raise RuntimeError("round failed")
    assert holder is not None
    with pytest.raises(ProcessLookupError):
        os.kill(holder, 0)
