"""User- and record-level accounting: cross-checks, calibration, ledgers, budgets."""

from __future__ import annotations

import json
import math

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant

from fedpers.privacy.dp import (
    PrivacyLedger,
    RoundEvent,
    create_accountant,
    cross_check_epsilon,
    cross_check_history,
    default_delta,
    epsilon_for,
    epsilon_from_history,
    record_level_epsilon,
    record_level_would_exceed,
    solve_noise_multiplier,
)
from fedpers.privacy.errors import BudgetExhaustedError, ConfigError, PrivacyAccountingError

CASES = [
    # sigma, q, rounds, delta
    (1.0, 0.01, 1000, 1e-5),
    (1.1, 0.053, 200, 0.1 / 943),
    (0.9, 1.0, 10, 0.1 / 943),  # every device every round: plain Gaussian composition
    (2.0, 1.0, 30, 1e-3),
    (5.0, 0.2, 50, 1e-4),
]


@pytest.mark.parametrize(("sigma", "q", "rounds", "delta"), CASES)
def test_opacus_rdp_matches_dp_accounting_within_2_percent(
    sigma: float, q: float, rounds: int, delta: float
) -> None:
    check = cross_check_epsilon(sigma, q, rounds, delta)
    assert check.method == "opacus.rdp" and check.reference_method == "dp_accounting.rdp"
    assert math.isfinite(check.epsilon) and check.epsilon > 0
    assert check.relative_difference < 0.02


@pytest.mark.parametrize(("sigma", "q", "rounds", "delta"), CASES[1:4])
def test_opacus_prv_matches_dp_accounting_pld_within_2_percent(
    sigma: float, q: float, rounds: int, delta: float
) -> None:
    check = cross_check_epsilon(sigma, q, rounds, delta, accountant="prv")
    assert check.reference_method == "dp_accounting.pld"
    assert check.relative_difference < 0.02
    # PRV is tighter than RDP
    assert check.epsilon <= epsilon_for(sigma, q, rounds, delta).epsilon * 1.001


def test_q_one_is_plain_gaussian_composition() -> None:
    # T-fold Gaussian(sigma) = Gaussian(sigma / sqrt(T)) exactly, in RDP
    a = epsilon_for(2.0, 1.0, 16, 1e-5).epsilon
    b = epsilon_for(0.5, 1.0, 1, 1e-5).epsilon
    assert a == pytest.approx(b, rel=1e-9)
    assert epsilon_for(2.0, 1.0, 16, 1e-5).sampling == "none"


def test_epsilon_grows_with_rounds_and_rate_and_shrinks_with_noise() -> None:
    base = epsilon_for(1.0, 0.05, 100, 1e-5).epsilon
    assert epsilon_for(1.0, 0.05, 200, 1e-5).epsilon > base
    assert epsilon_for(1.0, 0.10, 100, 1e-5).epsilon > base
    assert epsilon_for(1.5, 0.05, 100, 1e-5).epsilon < base


def test_zero_noise_is_non_private_never_finite() -> None:
    result = epsilon_for(0.0, 0.1, 5, 1e-5)
    assert result.epsilon == math.inf and not result.private
    assert result.to_json()["epsilon"] is None
    json.dumps(result.to_json())  # no Infinity in JSON
    mixed = epsilon_from_history(
        [RoundEvent.poisson(1.0, 0.1, 5), RoundEvent.poisson(0.0, 0.1)], 1e-5
    )
    assert not mixed.private and mixed.epsilon == math.inf
    # a round in which nobody was sampled costs nothing, even with sigma 0
    assert epsilon_from_history([RoundEvent.poisson(0.0, 0.0, 3)], 1e-5).epsilon == 0.0


@pytest.mark.parametrize("target", [1.0, 4.0, 16.0])
@pytest.mark.parametrize(("q", "rounds"), [(1.0, 10), (0.05, 100)])
def test_solve_noise_multiplier_round_trips(target: float, q: float, rounds: int) -> None:
    delta = default_delta(943)
    sigma = solve_noise_multiplier(target, q, rounds, delta, tolerance=1e-3)
    assert epsilon_for(sigma, q, rounds, delta).epsilon <= target
    assert epsilon_for(sigma * 0.99, q, rounds, delta).epsilon > target


def test_solve_rejects_bad_targets() -> None:
    with pytest.raises(ConfigError):
        solve_noise_multiplier(0.0, 0.1, 10, 1e-5)
    with pytest.raises(ConfigError):
        solve_noise_multiplier(math.inf, 0.1, 10, 1e-5)


def test_fixed_cohorts_use_sampling_without_replacement_replace_one() -> None:
    n, m, sigma, rounds, delta = 943, 100, 2.0, 30, 1e-4
    result = epsilon_for(sigma, None, rounds, delta, sampling="fixed", population=n, cohort=m)
    assert result.adjacency == "replace_one" and result.sampling == "fixed"
    assert result.accountant == "dp_accounting.rdp"
    assert "SampledWithoutReplacement" in result.method
    # independent composition with dp-accounting, sensitivity 2C -> multiplier sigma / 2
    acc = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        n, m, dp_accounting.GaussianDpEvent(sigma / 2)
    )
    acc.compose(event, rounds)
    assert result.epsilon == pytest.approx(acc.get_epsilon(delta), rel=1e-9)
    # drawing a fixed cohort is accounted more expensively than Poisson at the same rate
    assert result.epsilon > epsilon_for(sigma, m / n, rounds, delta).epsilon
    # sample_rate, when given, must agree with cohort / population
    with pytest.raises(ConfigError):
        epsilon_for(sigma, 0.5, rounds, delta, sampling="fixed", population=n, cohort=m)
    with pytest.raises(PrivacyAccountingError):
        epsilon_for(
            sigma, None, rounds, delta, sampling="fixed", population=n, cohort=m, accountant="prv"
        )
    with pytest.raises(PrivacyAccountingError):
        cross_check_epsilon(sigma, None, rounds, delta, sampling="fixed", population=n, cohort=m)


def test_fixed_cohort_of_everyone_is_unsampled_gaussian() -> None:
    fixed = epsilon_for(1.0, None, 10, 1e-4, sampling="fixed", population=943, cohort=943)
    assert fixed.adjacency == "add_or_remove_one" and fixed.sampling == "none"
    assert fixed.epsilon == pytest.approx(epsilon_for(1.0, 1.0, 10, 1e-4).epsilon)


def test_poisson_and_fixed_rounds_cannot_be_mixed() -> None:
    history = [RoundEvent.poisson(1.0, 0.1), RoundEvent.fixed(1.0, 100, 10)]
    with pytest.raises(PrivacyAccountingError):
        epsilon_from_history(history, 1e-5)


def test_accountant_registry_and_state_round_trip_through_json() -> None:
    with pytest.raises(ConfigError):
        create_accountant("gdp")
    acc = create_accountant("rdp")
    for _ in range(3):
        acc.step(RoundEvent.poisson(1.0, 0.1))
    acc.step(RoundEvent.poisson(1.2, 0.1))
    assert len(acc) == 4 and len(acc.history) == 2  # run-length compressed
    state = json.loads(json.dumps(acc.state_dict()))
    restored = create_accountant("rdp")
    restored.load_state_dict(state)
    assert restored.history == acc.history
    assert restored.get_epsilon(1e-5) == acc.get_epsilon(1e-5)
    with pytest.raises(PrivacyAccountingError):
        create_accountant("prv").load_state_dict(state)


def test_ledger_resume_neither_resets_nor_double_counts() -> None:
    delta = default_delta(943)
    ledger = PrivacyLedger(delta=delta)
    event = RoundEvent.poisson(1.0, 0.1)
    for _ in range(5):
        ledger.record(event)
    saved = json.dumps(ledger.state_dict())
    for _ in range(5):
        ledger.record(event)
    resumed = PrivacyLedger.from_state_dict(json.loads(saved))
    assert resumed.rounds == 5
    for _ in range(5):
        resumed.record(event)
    assert resumed.rounds == ledger.rounds == 10
    assert resumed.epsilon() == ledger.epsilon()
    assert resumed.epsilon() == pytest.approx(epsilon_for(1.0, 0.1, 10, delta).epsilon)
    with pytest.raises(PrivacyAccountingError):
        PrivacyLedger(delta=1e-3).load_state_dict(json.loads(saved))


def test_ledger_stops_before_exceeding_the_budget() -> None:
    delta, budget = 1e-4, 3.0
    ledger = PrivacyLedger(delta=delta)
    event = RoundEvent.poisson(1.0, 0.2)
    rounds = 0
    while not ledger.would_exceed(budget, event):
        ledger.record(event)
        rounds += 1
        assert rounds < 10_000
    assert ledger.epsilon() <= budget < ledger.epsilon_after(event)
    with pytest.raises(BudgetExhaustedError):
        ledger.check(budget, event)
    assert ledger.rounds == rounds  # check() did not record anything
    check = ledger.cross_check()
    assert check.relative_difference < 0.02
    assert ledger.report().rounds == rounds


def test_cross_check_history_for_heterogeneous_rounds() -> None:
    history = [RoundEvent.poisson(1.0, 0.1, 20), RoundEvent.poisson(1.5, 0.05, 30)]
    check = cross_check_history(history, 1e-5)
    assert check.relative_difference < 0.02


def test_record_level_history_composes() -> None:
    history = [(1.0, 0.1, 50), (1.0, 0.1, 50)]
    assert record_level_epsilon(history, 1e-5) == pytest.approx(
        epsilon_for(1.0, 0.1, 100, 1e-5).epsilon
    )
    assert record_level_epsilon([], 1e-5) == 0.0
    assert record_level_epsilon([(0.0, 0.1, 1)], 1e-5) == math.inf
    one = record_level_epsilon(history[:1], 1e-5)
    assert record_level_would_exceed(history[:1], history[1], 1e-5, budget=one * 1.01)
    assert not record_level_would_exceed(history[:1], history[1], 1e-5, budget=one * 2)


def test_default_delta_and_event_validation() -> None:
    assert default_delta(943) == pytest.approx(0.1 / 943)
    with pytest.raises(ConfigError):
        default_delta(0)
    with pytest.raises(ConfigError):
        RoundEvent.poisson(1.0, 1.5)
    with pytest.raises(ConfigError):
        RoundEvent.fixed(1.0, 10, 11)
    with pytest.raises(ConfigError):
        epsilon_for(1.0, 0.1, 10, 0.0)
    event = RoundEvent.fixed(1.0, 10, 3, count=2)
    assert RoundEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event
    with pytest.raises(PrivacyAccountingError):
        RoundEvent.from_dict({"noise_multiplier": 1.0})
