"""Audit statistics: ROC, Clopper-Pearson, epsilon lower bounds and the update-inspection score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hst

from fedpers.privacy.audit.inspection import evaluate_item_scores, item_row_norms
from fedpers.privacy.audit.one_run import (
    one_run_epsilon_from_counts,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from fedpers.privacy.audit.stats import (
    binomial_sf,
    clopper_pearson,
    epsilon_lower_bound_clopper_pearson,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from fedpers.privacy.errors import ConfigError, DataError

# --- ROC -----------------------------------------------------------------------------------


def test_auc_hand_examples() -> None:
    assert roc_auc([4, 3, 2, 1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    # pairs (member, non-member): (0.9 > 0.8), (0.9 > 0.1), (0.3 < 0.8), (0.3 > 0.1) -> 3/4
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [True, False, True, False]) == 0.75
    # every score tied: each pair counts 1/2
    assert roc_auc([1.0, 1.0, 1.0], [True, False, False]) == 0.5
    # one tied pair among four pairs: (2 > 1), (2 = 2) -> (1 + 0.5) / 2
    assert roc_auc([2.0, 2.0, 1.0], [True, False, False]) == 0.75


@settings(max_examples=50, deadline=None)
@given(
    hst.lists(hst.tuples(hst.integers(0, 5), hst.booleans()), min_size=2, max_size=40).filter(
        lambda xs: 0 < sum(b for _, b in xs) < len(xs)
    )
)
def test_auc_equals_pairwise_definition(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([float(s) for s, _ in pairs])
    labels = np.array([b for _, b in pairs])
    pos, neg = scores[labels], scores[~labels]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(scores, labels) == pytest.approx(brute)
    # trapezoidal area under the curve from roc_curve gives the same number
    fpr, tpr, _ = roc_curve(scores, labels)
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) == pytest.approx(brute)


def test_tpr_at_fpr_hand_examples() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    labels = [True, False, True, True, False, False]
    assert tpr_at_fpr(scores, labels, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(scores, labels, 1 / 3) == pytest.approx(1.0)
    assert tpr_at_fpr(scores, labels, 1.0) == 1.0
    # a tie between a member and a non-member at the top: no threshold separates them
    assert tpr_at_fpr([1.0, 1.0, 0.0], [True, False, False], 0.0) == 0.0
    assert tpr_at_fpr([1.0, 1.0, 0.0], [True, False, False], 0.5) == 1.0


def test_roc_rejects_bad_input() -> None:
    with pytest.raises(DataError):
        roc_auc([1.0, 2.0], [True, True])
    with pytest.raises(DataError):
        roc_auc([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(DataError):
        roc_auc([1.0, math.nan], [True, False])
    with pytest.raises(ConfigError):
        tpr_at_fpr([1.0, 0.0], [True, False], 1.5)


# --- binomial and Clopper-Pearson ------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 5, 0.3), (3, 10, 0.3), (10, 10, 0.99), (7, 50, 0.01)]
)
def test_binomial_sf_matches_scipy(k: int, n: int, p: float) -> None:
    assert binomial_sf(k, n, p) == pytest.approx(st.binom.sf(k - 1, n, p), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (7, 20), (1, 1000), (480, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_beta_quantiles(k: int, n: int, confidence: float) -> None:
    alpha = 1 - confidence
    lo, hi = clopper_pearson(k, n, confidence)
    expected_lo = 0.0 if k == 0 else st.beta.ppf(alpha / 2, k, n - k + 1)
    expected_hi = 1.0 if k == n else st.beta.ppf(1 - alpha / 2, k + 1, n - k)
    assert lo == pytest.approx(expected_lo, rel=1e-9, abs=1e-12)
    assert hi == pytest.approx(expected_hi, rel=1e-9, abs=1e-12)


def test_clopper_pearson_known_value() -> None:
    # rule of three: 0 successes in n trials -> one-sided 97.5% upper bound 1 - 0.025^(1/n)
    _, hi = clopper_pearson(0, 10)
    assert hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-12)


def test_clopper_pearson_rejects_bad_counts() -> None:
    with pytest.raises(ConfigError):
        clopper_pearson(11, 10)
    with pytest.raises(ConfigError):
        clopper_pearson(1, 0)
    with pytest.raises(ConfigError):
        clopper_pearson(1, 10, 1.0)


def test_epsilon_cp_bound_perfect_attack() -> None:
    # FPR and FNR upper bounds are both 1 - 0.025^(1/50); epsilon = log((1 - b) / b)
    b = 1 - 0.025 ** (1 / 50)
    assert epsilon_lower_bound_clopper_pearson(50, 0, 50, 0, 0.0) == pytest.approx(
        math.log((1 - b) / b), rel=1e-9
    )
    # delta reduces the bound
    assert epsilon_lower_bound_clopper_pearson(
        50, 0, 50, 0, 0.01
    ) < epsilon_lower_bound_clopper_pearson(50, 0, 50, 0, 0.0)


def test_epsilon_cp_bound_is_zero_for_chance() -> None:
    assert epsilon_lower_bound_clopper_pearson(25, 25, 25, 25, 1e-5) == 0.0
    assert epsilon_lower_bound_clopper_pearson(0, 0, 50, 50, 1e-5) == 0.0


def test_epsilon_cp_bound_grows_with_evidence() -> None:
    small = epsilon_lower_bound_clopper_pearson(45, 5, 45, 5, 1e-5)
    large = epsilon_lower_bound_clopper_pearson(450, 50, 450, 50, 1e-5)
    # the point estimate is log(0.9 / 0.1) = 2.197 for both; more trials get closer to it
    assert 0.0 < small < large < math.log(9)


# --- one-run auditing ----------------------------------------------------------------------------


def test_one_run_p_value_pure_dp_is_binomial_tail() -> None:
    p = math.exp(1.0) / (1 + math.exp(1.0))
    assert one_run_p_value(100, 40, 30, 1.0, 0.0) == pytest.approx(st.binom.sf(29, 40, p))
    assert one_run_p_value(100, 40, 0, 1.0, 0.0) == 1.0


def test_one_run_p_value_delta_term() -> None:
    eps, m, r, v, delta = 1.0, 200, 40, 30, 1e-4
    p = math.exp(eps) / (1 + math.exp(eps))
    alpha = max(
        (st.binom.cdf(v - 1, r, p) - st.binom.cdf(v - i - 1, r, p)) / i for i in range(1, v + 1)
    )
    expected = st.binom.sf(v - 1, r, p) + 2 * m * delta * alpha
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(expected, rel=1e-9)


def test_one_run_counts_bound_closed_form() -> None:
    # all r guesses right, delta = 0: reject while p_eps^r < 0.05
    r = 100
    p = 0.05 ** (1 / r)
    assert one_run_epsilon_from_counts(1000, r, r, 0.0) == pytest.approx(
        math.log(p / (1 - p)), abs=1e-6
    )
    assert one_run_epsilon_from_counts(1000, r, r // 2, 0.0) == 0.0


def test_one_run_bound_is_zero_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    ks = [10, 25, 50, 100, 250]
    bounds = []
    for _ in range(20):
        included = rng.random(500) < 0.5
        audit = one_run_epsilon_lower_bound(rng.normal(size=500), included, 1e-5, ks)
        bounds.append(audit.epsilon)
    # a valid 95% bound on an independent score exceeds 0 in <= 5% of runs in expectation
    assert sum(b > 0 for b in bounds) <= 3
    assert max(bounds) < 0.5


def test_one_run_bound_is_large_on_separated_scores() -> None:
    rng = np.random.default_rng(1)
    included = rng.random(1000) < 0.5
    scores = included.astype(float) + 0.01 * rng.random(1000)
    audit = one_run_epsilon_lower_bound(scores, included, 1e-5, [10, 50, 100, 200, 400])
    assert audit.epsilon > 4.0
    assert audit.best.correct == audit.best.guesses
    assert audit.included == int(included.sum())
    # more canaries -> a larger bound for a perfect attack
    small = one_run_epsilon_lower_bound(scores[:100], included[:100], 1e-5, [10, 40])
    assert small.epsilon < audit.epsilon


def test_one_run_bonferroni_lowers_each_k() -> None:
    scores = np.arange(1000.0)
    included = scores >= 500
    alone = one_run_epsilon_lower_bound(scores, included, 0.0, [50]).epsilon
    shared = one_run_epsilon_lower_bound(scores, included, 0.0, [50, 60]).per_k[0].epsilon
    assert shared < alone


def test_one_run_rejects_bad_k() -> None:
    with pytest.raises(ConfigError):
        one_run_epsilon_lower_bound(np.zeros(10), np.zeros(10, bool), 0.0, [6])
    with pytest.raises(ConfigError):
        one_run_epsilon_lower_bound(np.zeros(10), np.zeros(10, bool), 0.0, [])
    with pytest.raises(DataError):
        one_run_epsilon_lower_bound(np.zeros(10), np.zeros(9, bool), 0.0, [2])


# --- update inspection ----------------------------------------------------------------------------


def test_row_norms_and_perfect_recovery() -> None:
    delta = np.zeros((50, 4))
    true_items = [3, 17, 42]
    delta[true_items] = [[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0.5]]
    bias = np.zeros(50)
    bias[17] = 1.5
    scores = item_row_norms(delta, bias)
    assert scores[17] == pytest.approx(2.5)
    result = evaluate_item_scores(scores, true_items)
    assert result.auc == 1.0
    assert result.tpr_at_1pct_fpr == 1.0
    assert result.recovered_in_top == 3
    assert result.n_true == 3 and result.n_items == 50


def test_row_norms_under_heavy_noise_are_near_chance() -> None:
    rng = np.random.default_rng(3)
    delta = np.zeros((2000, 16))
    true_items = rng.choice(2000, size=100, replace=False)
    delta[true_items] = 0.01
    noisy = delta + rng.normal(scale=1.0, size=delta.shape)
    result = evaluate_item_scores(item_row_norms(noisy), true_items)
    assert abs(result.auc - 0.5) < 0.1


def test_row_norms_reject_bad_shapes() -> None:
    with pytest.raises(DataError):
        item_row_norms(np.zeros(5))
    with pytest.raises(DataError):
        item_row_norms(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(DataError):
        evaluate_item_scores(np.zeros(5), [5])
