from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.metrics import rank_of
from fedpers.privacy.errors import ConfigError, DataError
from fedpers.simulation.data.interactions import InteractionData
from fedpers.simulation.evaluation.protocol import (
    LeaveOneOutSplit,
    RankingMetrics,
    evaluate,
    evaluate_by_group,
    fairness_gaps,
    leave_one_out,
    rank_users,
    user_groups,
)

N_ITEMS = 14


def _data(
    rows: list[tuple[int, int, int]], n_users: int, n_items: int, **extra: object
) -> InteractionData:
    users = np.array([r[0] for r in rows], dtype=np.int64)
    items = np.array([r[1] for r in rows], dtype=np.int64)
    stamps = np.array([r[2] for r in rows], dtype=np.int64)
    return InteractionData(
        name="hand",
        users=users,
        items=items,
        ratings=np.ones(len(rows), dtype=np.float32),
        timestamps=stamps,
        n_users=n_users,
        n_items=n_items,
        user_ids=[f"u{i}" for i in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        **extra,  # type: ignore[arg-type]
    )


def hand_data() -> InteractionData:
    """Five users over 14 items; rows deliberately out of time order.

    user 0: 5@1, 0@2, 7@3, 12@4, and 0 again @5 (a repeat: the first one is kept)
            -> train [5, 0], valid 7, test 12
    user 1: 3@1, 13@2, 1@3 -> train [3], valid 13, test 1
    user 2: 0@1, 1@2, 13@3 -> train [0], valid 1, test 13
    user 3: 3@1 -> train [3], no valid, no test
    user 4: 2@7, 9@7 (same time: original order decides) -> train [2], test 9, no valid
    """
    rows = [
        (1, 1, 3),
        (0, 12, 4),
        (2, 13, 3),
        (0, 0, 5),
        (0, 5, 1),
        (4, 2, 7),
        (1, 3, 1),
        (0, 7, 3),
        (2, 0, 1),
        (3, 3, 1),
        (0, 0, 2),
        (1, 13, 2),
        (4, 9, 7),
        (2, 1, 2),
    ]
    return _data(
        rows,
        5,
        N_ITEMS,
        user_attributes={
            "gender": np.array(["F", "M", "M", "F", "M"]),
            "age": np.array([20, 30, 52, 19, 40]),
        },
    )


def hand_split() -> LeaveOneOutSplit:
    """The hand split with explicit negatives for users 1 and 2 (user 0 has exactly 10)."""
    split = leave_one_out(hand_data(), n_negatives=10, seed=3)
    negatives = split.sampled_negatives.copy()
    negatives[1] = [2, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    negatives[2] = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    return dataclasses.replace(split, sampled_negatives=negatives)


def hand_scorer(users: np.ndarray) -> np.ndarray:
    """Item i scores -i (item 0 is best) for every user except user 2, who scores all 0."""
    scores = np.tile(-np.arange(N_ITEMS, dtype=np.float64), (len(users), 1))
    scores[users == 2] = 0.0
    return scores


def test_leave_one_out_hand_split() -> None:
    split = leave_one_out(hand_data(), n_negatives=10, seed=3)
    assert [b.tolist() for b in split.train_by_user] == [[5, 0], [3], [0], [3], [2]]
    assert split.valid_items.tolist() == [7, 13, 1, -1, -1]
    assert split.test_items.tolist() == [12, 1, 13, -1, 9]
    assert split.train_users.tolist() == [0, 0, 1, 2, 3, 4]
    assert split.train_timestamps.tolist() == [1, 2, 1, 1, 1, 7]
    assert split.train_indptr.tolist() == [0, 2, 3, 4, 5, 6]
    assert split.eval_users("test").tolist() == [0, 1, 2, 4]
    assert split.eval_users("valid").tolist() == [0, 1, 2]
    indptr, items = split.history("test")
    assert [items[indptr[u] : indptr[u + 1]].tolist() for u in range(5)] == [
        [5, 0, 7],
        [3, 13],
        [0, 1],
        [3],
        [2],
    ]
    indptr, items = split.history("valid")
    assert items.tolist() == split.train_items.tolist()
    users, items = split.history_pairs("test")
    assert users.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 4]
    assert split.train_counts().tolist() == [2, 0, 1, 2, 0, 1] + [0] * 8


def test_negatives_avoid_every_interaction_and_pad_when_scarce() -> None:
    data = hand_data()
    split = leave_one_out(data, n_negatives=10, seed=3)
    seen = {(int(u), int(i)) for u, i in zip(data.users, data.items, strict=True)}
    for u in range(data.n_users):
        row = split.sampled_negatives[u]
        drawn = row[row >= 0]
        assert len(set(drawn.tolist())) == len(drawn)
        assert not any((u, int(i)) in seen for i in drawn)
    # user 0 has exactly 10 free items: all of them, in some order
    assert sorted(split.sampled_negatives[0].tolist()) == [1, 2, 3, 4, 6, 8, 9, 10, 11, 13]
    # 12 free items for user 4 (history {2, 9}): 10 distinct ones, no padding
    assert (split.sampled_negatives[4] >= 0).all()
    # asking for more negatives than free items pads with -1
    wide = leave_one_out(data, n_negatives=12, seed=3)
    assert (wide.sampled_negatives[0] == -1).sum() == 2
    assert sorted(wide.sampled_negatives[0][:10].tolist()) == [1, 2, 3, 4, 6, 8, 9, 10, 11, 13]


def test_negatives_are_fixed_by_the_seed() -> None:
    data = hand_data()
    a = leave_one_out(data, n_negatives=10, seed=3).sampled_negatives
    b = leave_one_out(data, n_negatives=10, seed=3).sampled_negatives
    c = leave_one_out(data, n_negatives=10, seed=4).sampled_negatives
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_negatives_are_uniform_over_free_items() -> None:
    # 2,000 users who all saw items 0-4 of 50; 10 negatives each from 45 free items.
    n_users, n_items = 2000, 50
    rows = [(u, i, i) for u in range(n_users) for i in range(5)]
    split = leave_one_out(_data(rows, n_users, n_items), n_negatives=10, seed=0)
    counts = np.bincount(split.sampled_negatives.ravel(), minlength=n_items)
    assert counts[:5].sum() == 0
    expected = n_users * 10 / 45
    assert np.all(np.abs(counts[5:] - expected) < 0.2 * expected)


def test_sampled_and_full_metrics_by_hand() -> None:
    split = hand_split()
    # users=[0, 1, 2, 3]: user 3 has no test item and is dropped.
    metrics = evaluate(hand_scorer, split, users=np.array([0, 1, 2, 3]))
    # sampled (10 negatives):
    #   user 0, target 12 vs {1,2,3,4,6,8,9,10,11,13}: 9 score higher -> rank 9, hit, 1/log2(11)
    #   user 1, target 1 vs {2,4,...,12}: none higher -> rank 0, hit, 1
    #   user 2, all scores tie: 10 ties count against -> rank 10, miss, 0
    # full (all items but the history, which for the test target includes the valid item):
    #   user 0: history {5,0,7}; competitors with i < 12: {1,2,3,4,6,8,9,10,11} -> rank 9
    #           (without excluding the valid item 7 it would be rank 10, a miss)
    #   user 1: history {3,13}; competitors with i < 1: {0} -> rank 1, 1/log2(3)
    #   user 2: ties with all 11 competitors -> rank 11, miss
    assert metrics.n_users == 3
    assert metrics.hr10_sampled == pytest.approx(2 / 3)
    assert metrics.ndcg10_sampled == pytest.approx((1 / math.log2(11) + 1.0 + 0.0) / 3)
    assert metrics.hr10_full == pytest.approx(2 / 3)
    assert metrics.ndcg10_full == pytest.approx((1 / math.log2(11) + 1 / math.log2(3)) / 3)
    # top 10s: user 0 {1,2,3,4,6,8,9,10,11,12}, user 1 {0,1,2,4,...,10},
    # user 2 (ties -> lowest indices) {2,...,11}: union {0..12}, 13 of 14 items
    assert metrics.coverage10 == pytest.approx(13 / 14)


def test_per_user_ranks_and_top10_by_hand() -> None:
    ranks = rank_users(hand_scorer, hand_split(), users=np.array([0, 1, 2]))
    assert ranks.sampled.tolist() == [9, 0, 10]
    assert ranks.full.tolist() == [9, 1, 11]
    assert ranks.top10[0].tolist() == [1, 2, 3, 4, 6, 8, 9, 10, 11, 12]
    assert ranks.top10[1].tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert ranks.top10[2].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_validation_target_by_hand() -> None:
    metrics = evaluate(hand_scorer, hand_split(), target="valid")
    # users 0, 1, 2 have a validation item; history is the training items only.
    #   user 0, target 7: sampled {1,2,3,4,6} higher -> rank 5; full: history {5,0},
    #           higher {1,2,3,4,6} -> rank 5; both hits with 1/log2(7)
    #   user 1, target 13: every negative scores higher -> rank 10; full rank 12: misses
    #   user 2 (all ties): sampled rank 10, full rank 12: misses
    assert metrics.n_users == 3
    assert metrics.hr10_sampled == pytest.approx(1 / 3)
    assert metrics.ndcg10_sampled == pytest.approx(1 / math.log2(7) / 3)
    assert metrics.hr10_full == pytest.approx(1 / 3)
    assert metrics.ndcg10_full == pytest.approx(1 / math.log2(7) / 3)
    # top 10s: {1,2,3,4,6,...,11}, {0,1,2,4,...,10}, {1,...,10}: union {0..11}
    assert metrics.coverage10 == pytest.approx(12 / 14)


def test_default_users_are_those_with_a_target() -> None:
    split = hand_split()
    assert rank_users(hand_scorer, split).users.tolist() == [0, 1, 2, 4]
    assert evaluate(hand_scorer, split).n_users == 4


def test_batching_does_not_change_results() -> None:
    split = hand_split()
    assert evaluate(hand_scorer, split, batch_size=1) == evaluate(hand_scorer, split)


def test_nan_scores_never_help_the_target() -> None:
    split = hand_split()

    def nan_scorer(users: np.ndarray) -> np.ndarray:
        return np.full((len(users), N_ITEMS), np.nan)

    ranks = rank_users(nan_scorer, split, users=np.array([0, 1, 2]))
    assert ranks.sampled.tolist() == [10, 10, 10]
    assert ranks.full.tolist() == [10, 11, 11]


def test_scorer_shape_and_arguments_are_checked() -> None:
    split = hand_split()
    with pytest.raises(ConfigError, match="shape"):
        evaluate(lambda u: np.zeros((len(u), 3)), split)
    with pytest.raises(ConfigError):
        evaluate(hand_scorer, split, batch_size=0)
    with pytest.raises(ConfigError):
        evaluate(hand_scorer, split, users=np.array([7]))
    with pytest.raises(ConfigError):
        evaluate(hand_scorer, split, target="train")  # type: ignore[arg-type]
    with pytest.raises(DataError):
        evaluate(hand_scorer, split, users=np.array([3]))


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        leave_one_out(hand_data(), n_negatives=-1)
    with pytest.raises(DataError):
        leave_one_out(_data([], 1, 3))


def test_metrics_as_dict_uses_protocol_names() -> None:
    metrics = RankingMetrics(0.5, 0.25, 0.1, 0.05, 0.2, 10)
    assert metrics.as_dict() == {
        "hr10_sampled": 0.5,
        "ndcg10_sampled": 0.25,
        "hr10_full": 0.1,
        "ndcg10_full": 0.05,
        "coverage10": 0.2,
        "n_users": 10,
    }


def test_user_groups_and_group_metrics() -> None:
    data = hand_data()
    groups = user_groups(data)
    assert groups["gender"].tolist() == ["F", "M", "M", "F", "M"]
    assert groups["age_band"].tolist() == ["<25", "25-34", "45+", "<25", "35-44"]
    by_group = evaluate_by_group(hand_scorer, hand_split(), groups)
    # test users 0 (F), 1, 2, 4 (M); user 3 (F) has no test item
    assert by_group["gender"]["F"].n_users == 1
    assert by_group["gender"]["M"].n_users == 3
    # user 0 alone: sampled rank 9, full rank 9
    assert by_group["gender"]["F"].hr10_sampled == 1.0
    assert by_group["gender"]["F"].ndcg10_full == pytest.approx(1 / math.log2(11))
    # user 2 alone: misses everything
    assert by_group["age_band"]["45+"].hr10_full == 0.0
    gaps = fairness_gaps(by_group)
    assert gaps["age_band"]["hr10_full"] == pytest.approx(1.0)
    males = by_group["gender"]["M"].hr10_full
    assert gaps["gender"]["hr10_full"] == pytest.approx(1.0 - males)


def test_user_groups_without_attributes_is_empty() -> None:
    data = _data([(0, 0, 1), (0, 1, 2)], 1, 3)
    assert user_groups(data) == {}
    assert evaluate_by_group(hand_scorer, leave_one_out(data, n_negatives=1), {}) == {}


def test_group_labels_must_cover_every_user() -> None:
    with pytest.raises(DataError):
        evaluate_by_group(hand_scorer, hand_split(), {"gender": np.array(["F"])})


def _reference_ranks(
    scores: np.ndarray, split: LeaveOneOutSplit, users: np.ndarray
) -> tuple[list[int], list[int]]:
    """Per-user loops with the scalar metric definitions: the specification."""
    sampled, full = [], []
    indptr, items = split.history("test")
    for u in users:
        target = int(split.test_items[u])
        negs = split.sampled_negatives[u]
        negs = negs[negs >= 0]
        sampled.append(rank_of(float(scores[u, target]), scores[u, negs]))
        history = set(items[indptr[u] : indptr[u + 1]].tolist())
        comp = [i for i in range(split.n_items) if i not in history and i != target]
        full.append(rank_of(float(scores[u, target]), scores[u, comp]))
    return sampled, full


@settings(max_examples=40, deadline=None)
@given(
    n_users=st.integers(1, 12),
    n_items=st.integers(2, 30),
    n_rows=st.integers(1, 120),
    n_negatives=st.integers(0, 12),
    seed=st.integers(0, 2**16),
    discrete=st.booleans(),
)
def test_vectorised_protocol_matches_reference(
    n_users: int, n_items: int, n_rows: int, n_negatives: int, seed: int, discrete: bool
) -> None:
    rng = np.random.default_rng(seed)
    rows = [
        (int(rng.integers(n_users)), int(rng.integers(n_items)), int(rng.integers(5)))
        for _ in range(n_rows)
    ]
    data = _data(rows, n_users, n_items)
    split = leave_one_out(data, n_negatives=n_negatives, seed=seed)
    seen = {(u, i) for u, i, _ in rows}
    for u in range(n_users):
        row = split.sampled_negatives[u]
        drawn = row[row >= 0].tolist()
        assert len(set(drawn)) == len(drawn)
        assert not any((u, i) in seen for i in drawn)
        free = n_items - len({i for uu, i, _ in rows if uu == u})
        assert len(drawn) == min(n_negatives, free)
    scores = rng.normal(size=(n_users, n_items))
    if discrete:
        scores = np.round(scores)  # many ties
    users = split.eval_users("test")
    if len(users) == 0:
        return
    ranks = rank_users(lambda u: scores[u], split, batch_size=3)
    sampled, full = _reference_ranks(scores, split, users)
    assert ranks.sampled.tolist() == sampled
    assert ranks.full.tolist() == full


@pytest.mark.slow
def test_movielens_split_and_evaluation_are_fast() -> None:
    from fedpers.simulation.data import load_movielens_100k

    data = load_movielens_100k()
    timings = []
    for _ in range(3):  # best of three: the machine is shared
        start = time.perf_counter()
        split = leave_one_out(data)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 2.0
    assert split.sampled_negatives.shape == (943, 99)
    assert (split.test_items >= 0).all() and (split.valid_items >= 0).all()
    assert len(split.train_items) == 100_000 - 2 * 943
    rng = np.random.default_rng(0)
    users_v = rng.normal(size=(943, 64)).astype(np.float32)
    items_v = rng.normal(size=(1682, 64)).astype(np.float32)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        metrics = evaluate(lambda u: users_v[u] @ items_v.T, split)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 1.0
    assert metrics.n_users == 943
