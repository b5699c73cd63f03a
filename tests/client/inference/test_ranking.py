from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpers.client.inference.fold_in import fold_in
from fedpers.client.inference.ranking import (
    Basis,
    ItemFilter,
    candidate_mask,
    check_request,
    contextual_scores,
    explain_items,
    profile_scores,
    select_items,
    unit_rows,
)
from fedpers.privacy.errors import ConfigError

IDS = [f"i{j}" for j in range(8)]
INDEX = {item: j for j, item in enumerate(IDS)}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 60),
    k=st.integers(1, 30),
    diversity=st.sampled_from([0.0, 0.3, 1.0]),
    keep=st.floats(0.0, 1.0),
)
def test_selection_returns_distinct_allowed_items(
    seed: int, n: int, k: int, diversity: float, keep: float
) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    scores = rng.normal(size=n)
    mask = rng.random(n) < keep
    chosen = select_items(scores, mask, k, diversity, vectors)
    assert len(chosen) == min(k, int(mask.sum()))
    assert len(set(chosen)) == len(chosen)
    assert all(mask[i] for i in chosen)
    if diversity == 0.0 and chosen:
        # Pure relevance: exactly the best-scored candidates, best first.
        best = np.sort(scores[mask])[::-1][: len(chosen)]
        np.testing.assert_allclose(scores[chosen], best)


def test_precomputed_unit_vectors_give_the_same_mmr_selection() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    scores = rng.normal(size=300)
    mask = np.ones(300, dtype=bool)
    a = select_items(scores, mask, 10, 0.5, vectors)
    b = select_items(scores, mask, 10, 0.5, vectors, unit_vectors=unit_rows(vectors))
    assert a == b


def test_diversity_spreads_picks_over_near_duplicates() -> None:
    # Items 0-4 are near copies of one direction with the top scores; 5-9 point elsewhere.
    vectors = np.array([[1.0, 0.01 * j] for j in range(5)] + [[0.0, 1.0]] * 5, np.float32)
    scores = np.array([5.0, 4.9, 4.8, 4.7, 4.6, 1.0, 0.9, 0.8, 0.7, 0.6])
    mask = np.ones(10, dtype=bool)
    assert select_items(scores, mask, 2, 0.0, vectors) == [0, 1]
    diverse = select_items(scores, mask, 2, 0.7, vectors)
    assert diverse[0] == 0
    assert diverse[1] >= 5


def test_profile_scores_are_dot_plus_bias() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 5)).astype(np.float32)
    bias = rng.normal(size=20).astype(np.float32)
    query = rng.normal(size=5).astype(np.float32)
    np.testing.assert_allclose(
        profile_scores(vectors, bias, query), vectors @ query + bias, rtol=1e-5
    )


def test_contextual_scores_add_only_matching_boosts() -> None:
    pop = np.arange(4, dtype=np.float32)
    boosts = {"hour=21": np.array([10.0, 0, 0, 0]), "device=tv": np.array([0, 0, 0, 5.0])}
    out = contextual_scores(pop, boosts, {"hour": 21, "device": "mobile"})
    assert out.tolist() == [10.0, 1.0, 2.0, 3.0]
    assert pop.tolist() == [0.0, 1.0, 2.0, 3.0]  # input untouched
    assert contextual_scores(pop, boosts, None).tolist() == pop.tolist()


def test_candidate_mask_applies_allow_block_features_and_predicate() -> None:
    feats = np.zeros((8, 2), dtype=np.float32)
    feats[[1, 2, 3], 0] = 1.0
    mask = candidate_mask(
        IDS,
        INDEX,
        ItemFilter(
            allow=frozenset({"i1", "i2", "i3", "i4", "unknown"}),
            block=frozenset({"i2", "nope"}),
            require_features=("Comedy",),
            predicate=lambda item: item != "i3",
        ),
        item_features=feats,
        feature_names=["Comedy", "Drama"],
    )
    assert np.flatnonzero(mask).tolist() == [1]
    assert candidate_mask(IDS, INDEX, None).all()
    with pytest.raises(ConfigError, match="unknown item feature"):
        candidate_mask(
            IDS,
            INDEX,
            ItemFilter(require_features=("Horror",)),
            item_features=feats,
            feature_names=["Comedy", "Drama"],
        )
    with pytest.raises(ConfigError, match="needs a model with item features"):
        candidate_mask(IDS, INDEX, ItemFilter(require_features=("Comedy",)))


def _explain_one(item: int, basis: Basis, **kwargs: Any) -> str:
    return explain_items([item], basis, **kwargs)[0]


def test_explanations_name_the_basis_and_the_nearest_history_item() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]], np.float32)
    cold = np.array([False, False, False, True])
    common = {"item_ids": ["a", "b", "c", "d"], "item_vectors": vectors, "cold_items": cold}
    assert _explain_one(3, "personalised", **common) == "new item, scored from its attributes"
    assert "no personal data" in _explain_one(0, "popular", **common)
    assert _explain_one(0, "contextual", context={"hour": 9}, **common).endswith("(hour=9)")
    assert _explain_one(1, "personalised", history=[2, 0], **common) == (
        "because you interacted with a"
    )
    assert _explain_one(1, "personalised", **common) == "matches your profile"


def test_request_checks() -> None:
    check_request(1, 0.0)
    with pytest.raises(ConfigError, match="k must be"):
        check_request(0, 0.0)
    with pytest.raises(ConfigError, match="diversity"):
        check_request(3, 1.5)


def test_fold_in_moves_the_vector_towards_the_positives() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 6)).astype(np.float32)
    bias = np.zeros(50, dtype=np.float32)
    u0 = np.zeros(6, dtype=np.float32)
    pos = np.array([1, 2, 3])
    u = fold_in(u0, vectors, bias, pos, 30, 0.1, np.random.default_rng(1))
    before = profile_scores(vectors, bias, u0)[pos].mean()
    after = profile_scores(vectors, bias, u)[pos] - profile_scores(vectors, bias, u).mean()
    assert after.mean() > before
    assert u0.tolist() == [0.0] * 6


def test_inference_modules_import_without_torch() -> None:
    code = (
        "import sys, fedpers.client.inference.ranking, fedpers.client.inference.fold_in, "
        "fedpers.client.session; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batch_explanations_match_the_single_ones() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(30, 6)).astype(np.float32)
    cold = np.zeros(30, dtype=bool)
    cold[[3, 9]] = True
    ids = [f"m{j}" for j in range(30)]
    history = [4, 8, 15, 16, 23]
    items = [0, 3, 9, 12, 29]
    for basis in ("personalised", "contextual", "popular"):
        common = {"item_ids": ids, "item_vectors": vectors, "cold_items": cold}
        single = [
            _explain_one(i, basis, history=history, context={"hour": 1}, **common)  # type: ignore[arg-type]
            for i in items
        ]
        batch = explain_items(
            items,
            basis,
            history=history,
            context={"hour": 1},
            unit_vectors=unit_rows(vectors),
            **common,  # type: ignore[arg-type]
        )
        assert batch == single
    assert explain_items([], "personalised", history=history, **common) == []  # type: ignore[arg-type]
