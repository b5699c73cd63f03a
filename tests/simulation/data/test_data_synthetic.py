"""The synthetic generator: reproducible, power-law, learnable, bounded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpers.privacy.errors import ConfigError
from fedpers.simulation.data import SyntheticConfig, generate_synthetic
from fedpers.simulation.data.synthetic import (
    alias_table,
    draw_from_alias,
    popularity_weights,
    synthetic_truth,
)

POOLED = SyntheticConfig(n_users=3_000, n_items=5_000, events_per_user=10, seed=7)
EXACT = SyntheticConfig(n_users=500, n_items=60, events_per_user=8, seed=7)


@pytest.mark.parametrize("config", [POOLED, EXACT], ids=["pooled", "exact"])
def test_shapes_and_invariants(config: SyntheticConfig) -> None:
    data = generate_synthetic(config)
    n, k = config.n_users, config.events_per_user
    assert (data.n_users, data.n_items, data.n_interactions) == (n, config.n_items, n * k)
    assert data.users.dtype == np.int64 and data.items.dtype == np.int64
    assert (data.users == np.repeat(np.arange(n), k)).all()
    items = data.items.reshape(n, k)
    assert (np.sort(items, axis=1)[:, 1:] != np.sort(items, axis=1)[:, :-1]).all(), "repeats"
    times = data.timestamps.reshape(n, k)
    assert (np.diff(times, axis=1) > 0).all()
    assert times.min() >= config.start_timestamp
    assert times.max() < config.start_timestamp + config.time_span_days * 86_400
    assert data.item_features is not None
    assert data.item_features.shape == (config.n_items, config.n_item_features)
    assert data.item_feature_names == [f"f{j}" for j in range(config.n_item_features)]
    assert set(data.user_attributes) == {"segment", "age_band"}
    assert set(data.user_attributes["age_band"].tolist()) == {"<25", "25-34", "35-44", "45+"}
    assert len(data.user_attributes["segment"]) == n
    assert (data.ratings == 1.0).all()


def test_reproducible_with_seed() -> None:
    a, b = generate_synthetic(POOLED), generate_synthetic(POOLED)
    assert (a.items == b.items).all() and (a.timestamps == b.timestamps).all()
    assert (a.user_attributes["segment"] == b.user_attributes["segment"]).all()
    assert a.item_features is not None and b.item_features is not None
    assert np.array_equal(a.item_features, b.item_features)
    c = generate_synthetic(dataclasses.replace(POOLED, seed=8))
    assert (a.items != c.items).mean() > 0.5


def test_chunking_does_not_change_users_already_generated() -> None:
    # Users of the first chunk depend only on their own stream: growing n_users
    # within the same chunk layout keeps the first users' histories.
    small = SyntheticConfig(n_users=1_000, n_items=5_000, events_per_user=10, chunk_users=500)
    large = dataclasses.replace(small, n_users=1_400)
    a, b = generate_synthetic(small), generate_synthetic(large)
    assert (a.items[:5_000] == b.items[:5_000]).all()


def test_power_law_popularity() -> None:
    data = generate_synthetic(POOLED)
    counts = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    top = counts[: data.n_items // 100].sum() / counts.sum()
    assert top > 0.25, f"top 1% of items got only {top:.1%} of interactions"
    flat = generate_synthetic(dataclasses.replace(POOLED, popularity_exponent=0.0))
    flat_counts = np.sort(np.bincount(flat.items, minlength=flat.n_items))[::-1]
    assert flat_counts[: flat.n_items // 100].sum() / flat_counts.sum() < top / 3


def test_popularity_weights_follow_ranks() -> None:
    p = popularity_weights(1_000, 1.0, np.random.default_rng(0))
    assert p.sum() == pytest.approx(1.0)
    ranked = np.sort(p)[::-1]
    assert ranked[0] / ranked[9] == pytest.approx(10.0)
    assert ranked[0] / ranked[99] == pytest.approx(100.0)


@pytest.mark.parametrize("config", [POOLED, EXACT], ids=["pooled", "exact"])
def test_choices_carry_learnable_affinity(config: SyntheticConfig) -> None:
    data = generate_synthetic(config)
    truth = synthetic_truth(config)
    affinity = np.einsum("nd,nd->n", truth.user_factors[data.users], truth.item_factors[data.items])
    # Baseline: the same users paired with items drawn from the popularity alone.
    rng = np.random.default_rng(0)
    random_items = rng.choice(config.n_items, size=data.n_interactions, p=truth.popularity)
    baseline = np.einsum(
        "nd,nd->n", truth.user_factors[data.users], truth.item_factors[random_items]
    )
    assert affinity.mean() - baseline.mean() > 0.5, (affinity.mean(), baseline.mean())
    no_signal = generate_synthetic(dataclasses.replace(config, affinity_scale=0.0))
    flat = np.einsum(
        "nd,nd->n", truth.user_factors[no_signal.users], truth.item_factors[no_signal.items]
    )
    assert abs(flat.mean() - baseline.mean()) < 0.1


def test_item_features_predict_item_factors() -> None:
    truth = synthetic_truth(dataclasses.replace(POOLED, n_item_features=32, feature_noise=0.3))
    x, y = truth.item_features, truth.item_factors
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r2 = 1.0 - ((y - x @ coef) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    assert r2 > 0.5, r2
    assert np.allclose(x.mean(axis=0), 0.0, atol=1e-4) and np.allclose(
        x.std(axis=0), 1.0, atol=1e-3
    )


def test_segments_share_taste() -> None:
    # Item profiles of one segment, measured on two disjoint halves of its users, agree
    # more with each other than with any other segment's profile.
    data = generate_synthetic(POOLED)
    segment = data.user_attributes["segment"][data.users]
    half = data.users % 2
    names = np.unique(segment)
    assert len(names) == POOLED.n_segments

    def profiles(part: int) -> np.ndarray:
        rows = [
            np.bincount(data.items[(segment == s) & (half == part)], minlength=data.n_items)
            for s in names
        ]
        p = np.stack(rows).astype(float)
        return p / np.linalg.norm(p, axis=1, keepdims=True)

    cosine = profiles(0) @ profiles(1).T
    off_diagonal = cosine[~np.eye(len(names), dtype=bool)].reshape(len(names), -1)
    assert (np.diag(cosine) > off_diagonal.max(axis=1)).all(), cosine


def test_no_item_features() -> None:
    data = generate_synthetic(dataclasses.replace(EXACT, n_item_features=0))
    assert data.item_features is None and data.item_feature_names == []


@pytest.mark.parametrize(
    "changes",
    [
        {"n_users": 0},
        {"n_users": 1_000_001},
        {"n_items": 1},
        {"n_items": 100_001},
        {"events_per_user": 0},
        {"n_items": 10, "events_per_user": 11},
        {"dim": 0},
        {"popularity_exponent": -0.1},
        {"popularity_exponent": float("nan")},
        {"affinity_scale": float("inf")},
        {"n_segments": 0},
        {"segment_strength": 1.5},
        {"time_span_days": 0.0},
        {"seed": -1},
        {"n_users": 10.5},
        {"n_users": True},
    ],
)
def test_bounds_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"^synthetic: "):
        SyntheticConfig(**changes)  # type: ignore[arg-type]


def test_limits_are_accepted() -> None:
    config = SyntheticConfig(n_users=1_000_000, n_items=100_000, events_per_user=10)
    assert config.n_users == 1_000_000 and not config.exact


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.5])
def test_alias_table_encodes_the_distribution_exactly(exponent: float) -> None:
    p = popularity_weights(500, exponent, np.random.default_rng(1))
    accept, alias = alias_table(p)
    # P(i) = (accept[i] + sum over columns j aliased to i of (1 - accept[j])) / n.
    implied = accept.copy()
    np.add.at(implied, alias, 1.0 - accept)
    assert np.allclose(implied / len(p), p, rtol=1e-9, atol=1e-15)
    draws = draw_from_alias(accept, alias, (200_000,), np.random.default_rng(2))
    empirical = np.bincount(draws, minlength=len(p)) / draws.size
    assert np.abs(empirical - p).sum() < 0.1
