"""The federation recipes: one per tuned budget, picked by epsilon."""

from __future__ import annotations

import math

import pytest

from fedpers.client.device_round import RoundInstructions
from fedpers.privacy.errors import ConfigError
from fedpers.simulation.federation.recipes import RECIPES, recommended_config


def test_recommended_config_picks_the_recipe_for_the_budget() -> None:
    eps_values = [r.epsilon for r in RECIPES]
    assert eps_values == sorted(eps_values)
    assert math.isinf(recommended_config(None).epsilon)
    assert recommended_config(math.inf) == recommended_config(None)
    assert not recommended_config(None).private and recommended_config(None).clip_norm == 0
    for recipe in RECIPES:
        assert recommended_config(recipe.epsilon) is recipe
        n_arrays = 3 if recipe.use_item_features else 2
        assert len(recipe.lr_scales) in (0, n_arrays)
        if recipe.private:
            assert recipe.clip_norm > 0
        # the session shift is a ranking setting: local training never carries one
        assert recipe.local.session_weight == 0.0
    assert recommended_config(None).eval_local.session_weight > 0
    assert "session-shifted ranking" in recommended_config(None).note
    # the ranking setting reaches devices through the round config
    instr = RoundInstructions(
        server_round=1,
        seed=0,
        clip_norm=0.0,
        noise_share_std=0.0,
        local=recommended_config(None).eval_local,
    )
    assert RoundInstructions.from_config(instr.to_config()).local.session == (
        recommended_config(None).eval_local.session
    )
    # between two tuned budgets: the smaller one (never more noise-hungry than asked)
    assert recommended_config(5.0).epsilon == 4.0
    assert recommended_config(0.5) is RECIPES[0]
    with pytest.raises(ConfigError):
        recommended_config(0.0)


def test_recipe_optimizer_kwargs_carry_the_noise_level() -> None:
    private = next(r for r in RECIPES if r.private and r.denoise)
    kwargs = private.optimizer_kwargs(2.0, 100.0)
    assert kwargs["denoise_std"] == pytest.approx(2.0 * private.clip_norm / 100.0)
    assert "denoise_std" not in private.optimizer_kwargs(0.0, 100.0)
    frozen = next(r for r in RECIPES if r.lr_scales)
    assert frozen.optimizer_kwargs(1.0, 10.0)["lr_scales"] == tuple(frozen.lr_scales)
