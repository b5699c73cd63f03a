"""The crafted-update audit: it measures the mechanism's noise and catches a weaker one."""

from __future__ import annotations

import math

import pytest

from fedpers.privacy.audit.gdp import gaussian_epsilon
from fedpers.privacy.dp.accounting import epsilon_for
from fedpers.privacy.errors import ConfigError
from fedpers.simulation.audit.attacks import evaluate_canary_scores
from fedpers.simulation.audit.crafted import (
    CraftedAuditConfig,
    crafted_scores,
    run_crafted_audit,
)

SIGMA, C, DELTA = 1.3, 0.5, 1e-4


@pytest.fixture(scope="module")
def section() -> dict[str, object]:
    return dict(
        run_crafted_audit(
            noise_multiplier=SIGMA,
            clip_norm=C,
            expected_cohort=200.0,
            sample_rate=1.0,
            rounds=4,
            delta=DELTA,
            claimed_epsilon=epsilon_for(SIGMA, 1.0, 4, DELTA).epsilon,
            config=CraftedAuditConfig(canaries=6000, one_run_canaries=1000, row_width=9),
        )
    )


def test_measured_separation_matches_the_noise_the_pipeline_claims(section: dict) -> None:
    one, every = section["variants"]
    # sd of mu-hat with 3000 per class is about 0.03; 0.1 is > 3 sd
    assert one["measured_mu"] == pytest.approx(1 / SIGMA, abs=0.1)
    assert every["measured_mu"] == pytest.approx(2 / SIGMA, abs=0.1)
    assert one["estimated_epsilon"] == pytest.approx(one["exact_gaussian_epsilon"], abs=0.5)
    assert every["estimated_epsilon"] == pytest.approx(every["exact_gaussian_epsilon"], abs=0.5)


def test_lower_bounds_of_a_correct_mechanism_stay_below_the_accountant(section: dict) -> None:
    for v in section["variants"]:
        assert 0 <= v["clopper_pearson_epsilon"] <= v["accountant_epsilon"]
        assert v["one_run_epsilon"] <= v["accountant_epsilon"]
        assert v["exact_gaussian_epsilon"] <= v["accountant_epsilon"]
    one, every = section["variants"]
    assert every["clopper_pearson_epsilon"] > one["clopper_pearson_epsilon"]  # 4 rounds leak more


def test_a_mechanism_with_less_noise_than_claimed_is_caught() -> None:
    # the pipeline runs with sigma 0.5 while the claim is computed for sigma 3
    claimed = epsilon_for(3.0, 1.0, 1, 1e-5).epsilon
    included, one_round, _ = crafted_scores(
        canaries=4000,
        row_width=8,
        noise_multiplier=0.5,
        clip_norm=1.0,
        expected_cohort=100.0,
        sample_rate=1.0,
        rounds=1,
        seed=3,
    )
    _, _, cp = evaluate_canary_scores({"crafted_update": one_round}, included, 1e-5)
    assert cp["epsilon"] > claimed


def test_subsampled_rounds_have_no_closed_form_but_are_bounded() -> None:
    q, rounds = 0.2, 3
    s = run_crafted_audit(
        noise_multiplier=1.0,
        clip_norm=1.0,
        expected_cohort=50.0,
        sample_rate=q,
        rounds=rounds,
        delta=DELTA,
        claimed_epsilon=epsilon_for(1.0, q, rounds, DELTA).epsilon,
        config=CraftedAuditConfig(canaries=4000, row_width=4),
    )
    every = s["variants"][1]
    assert every["exact_gaussian_epsilon"] is None and every["estimated_epsilon"] is None
    assert every["clopper_pearson_epsilon"] <= every["accountant_epsilon"]
    assert every["auc"] > 0.5


def test_non_private_runs_are_not_applicable() -> None:
    s = run_crafted_audit(
        noise_multiplier=0.0,
        clip_norm=0.0,
        expected_cohort=10.0,
        sample_rate=1.0,
        rounds=3,
        delta=DELTA,
        claimed_epsilon=None,
    )
    assert s["status"] == "not_applicable" and s["variants"] == []


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        CraftedAuditConfig(canaries=100, one_run_canaries=200)
    assert math.isfinite(gaussian_epsilon(1 / SIGMA, DELTA))
