"""The federation configuration: privacy resolution and the user-level DP settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedpers.privacy.errors import ConfigError
from fedpers.server.config import FederationConfig
from fedpers.server.dp_wrapper import UserDPConfig


def _user_level(tmp_path: Path, **options: object) -> FederationConfig:
    return FederationConfig(
        run_dir=str(tmp_path),
        devices_dir=str(tmp_path),
        rounds=3,
        num_devices=20,
        n_items=4,
        sample_rate=0.5,
        dp="user",
        clip_norm=0.5,
        **options,  # type: ignore[arg-type]
    )


def test_resolve_privacy_without_budget_or_sigma_is_a_config_error(tmp_path: Path) -> None:
    config = _user_level(tmp_path, target_epsilon=8.0)
    # The constructor refuses this combination; resolve_privacy checks it again itself
    # (a named error, not an assert) for a config that bypassed the constructor.
    object.__setattr__(config, "target_epsilon", None)
    with pytest.raises(ConfigError, match="--epsilon or --noise-multiplier"):
        config.resolve_privacy()


def test_user_dp_config_from_a_resolved_run(tmp_path: Path) -> None:
    config = _user_level(tmp_path, target_epsilon=8.0, secure_agg="he").resolve_privacy()
    dp = UserDPConfig.from_run(config)
    assert config.noise_multiplier is not None
    assert dp == UserDPConfig(
        noise_multiplier=config.noise_multiplier,
        clip_norm=0.5,
        delta=config.resolved_delta,
        target_epsilon=8.0,
        adaptive=None,
        distributed_noise=True,
        accountant="rdp",
    )


def test_user_dp_config_needs_a_resolved_noise_multiplier(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resolved noise multiplier"):
        UserDPConfig.from_run(_user_level(tmp_path, target_epsilon=8.0))
